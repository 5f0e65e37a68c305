//! The controller: one Raft group (KRaft's idea) whose log holds the cluster's metadata as
//! commands (nodes, topics, configs, replica assignments). Every node runs a replica of it
//! and applies each command in log order to its own broker: creating a topic opens its
//! partitions' logs (as replicas) and starts the Raft groups of the partitions this node holds.
//!
//! The controller's log lives in `<data>/cluster/metadata/`; what has been applied (with the
//! node registry and the assignments) in `<data>/cluster/controller.meta`, saved after each
//! command. A command applied again after a crash between the two finds its work done and
//! does nothing, so replay is safe. Partition leaders are not controller state: each
//! partition group elects its own.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::broker::{Broker, Coordinate, NotHeld, Placement};
use crate::cluster::MAX_NODE_ID;
use crate::cluster::entry::Payload;
use crate::cluster::log_store::{Io, Replica};
use crate::cluster::partition::{PartitionReplica, cluster_error, forward_appends, run_on};
use crate::cluster::peer::{GroupId, Groups, MAX_KAFKA_ADDRESS, NotJoined, Router, Welcome};
use crate::cluster::raft::{LogId, Node, NodeId, StoredMembership};
use crate::cluster::state_machine::Applying;
use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::group::OFFSETS_TOPIC;
use crate::storage::format::Batch;
use crate::storage::{BatchBuilder, Compression, RecordBatch, StdFs, meta};

/// The controller's group id (no topic has an empty name).
pub(crate) fn controller_group() -> GroupId {
    GroupId {
        topic: String::new(),
        partition: 0,
        incarnation: 0,
    }
}

/// The voters of the controller's group among the cluster's founding nodes: the first five
/// (by id) of five or more, the first three of three or four, else all. The others, and
/// every node that joins later, follow the controller's log as learners: more voters would
/// make each change wait for more nodes without surviving more failures that matter.
pub(crate) fn controller_voters(founders: &[NodeId]) -> Vec<NodeId> {
    let mut ids = founders.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let n = match ids.len() {
        n if n >= 5 => 5,
        n if n >= 3 => 3,
        n => n,
    };
    ids.truncate(n);
    ids
}

/// How often the controller's leader looks for registered nodes its group lacks.
const LEARNERS_EVERY: Duration = Duration::from_secs(1);

/// How many entries a replica may trail its leader by and still count as in sync.
pub(crate) const IN_SYNC_LAG: u64 = 100;

/// How long a command waits to be applied on the node that submitted it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many outcomes of applied commands a node remembers for their submitters.
const OUTCOMES_KEPT: usize = 1024;

/// A node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub id: u64,
    /// Where it listens for its peers.
    pub peer_address: SocketAddr,
    /// Where it serves Kafka clients, if it does (`host:port`).
    pub kafka_address: Option<String>,
}

/// A change to the cluster's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Command {
    RegisterNode(NodeInfo),
    CreateTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
        /// The nodes holding each partition.
        replicas: Vec<Vec<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    AddPartitions {
        name: String,
        /// The partition count the change was asked against: applied only at that count.
        from: u32,
        /// The nodes holding each new partition.
        replicas: Vec<Vec<NodeId>>,
    },
    AlterTopicConfig {
        name: String,
        config: TopicConfig,
    },
    /// A node that is not a founder asks to be registered: refused (alike on every node) if
    /// its id is a founder's, another address's, or that of a node holding replicas.
    Join(NodeInfo),
}

/// What `controller.meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ControllerState {
    pub(crate) applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
    pub(crate) nodes: BTreeMap<NodeId, NodeInfo>,
    /// Each topic's incarnation and the nodes holding each of its partitions.
    pub(crate) assignments: BTreeMap<String, Assignment>,
    /// Nodes that joined and have not started yet (they register themselves once they have):
    /// they are given no replicas until then.
    pub(crate) joining: BTreeSet<NodeId>,
}

/// Which nodes hold a topic's partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Assignment {
    /// The index of the controller entry that created the topic: a topic deleted and created
    /// again under its name is another incarnation, whose Raft groups are other groups.
    pub(crate) incarnation: u64,
    /// The nodes holding each partition.
    pub(crate) replicas: Vec<Vec<NodeId>>,
}

/// Why a command could not be applied on this node: a refusal every node makes alike (the
/// submitter is told), or a failure of this node's own (it stops applying).
enum Failure {
    Refused(Error),
    Local(Error),
}

impl From<Error> for Failure {
    /// Only what every node decides alike from the same state is a refusal; anything else
    /// (a disk, a closed broker) is this node's own failure.
    fn from(e: Error) -> Self {
        match e {
            Error::TopicExists { .. }
            | Error::UnknownTopic { .. }
            | Error::InvalidTopicName { .. }
            | Error::InvalidPartitions { .. }
            | Error::InvalidConfig { .. }
            | Error::InvalidArgument { .. } => Failure::Refused(e),
            e => Failure::Local(e),
        }
    }
}

/// A node's controller: applies the metadata log to the node, and submits changes to it.
pub(crate) struct Controller {
    me: NodeId,
    broker: Broker,
    router: Router,
    groups: Arc<Groups>,
    state_path: PathBuf,
    state: Mutex<ControllerState>,
    /// The node's running partition replicas.
    replicas: tokio::sync::Mutex<BTreeMap<GroupId, PartitionReplica>>,
    /// Their storage, for lookups that do not wait (the term boundaries).
    stores: parking_lot::RwLock<BTreeMap<GroupId, Arc<Replica>>>,
    /// The controller's own replica, once started.
    pub(crate) metadata: tokio::sync::OnceCell<PartitionReplica>,
    /// The offset after the last entry applied here.
    applied: watch::Sender<i64>,
    /// What the last commands applied here came to, by their offset.
    outcomes: Mutex<VecDeque<(i64, std::result::Result<(), String>)>>,
    /// The replication factor of new topics: at most this many nodes hold a partition.
    replication_factor: usize,
    runtime: Handle,
    /// Where each group's replicas are, as this node's replicas last saw it.
    leaders: Arc<parking_lot::RwLock<BTreeMap<GroupId, Placement>>>,
    /// The cluster's founding nodes and their peer addresses.
    founders: Vec<(NodeId, SocketAddr)>,
    /// Pokes the task that adds registered nodes to the controller's group.
    registered: tokio::sync::Notify,
    /// Whether this node coordinates groups, since which term.
    coordinating: Arc<Coordinating>,
    /// Whether this node coordinates transactions, since which term.
    transacting: Arc<Coordinating>,
    /// Raft's settings for the node's groups.
    raft_config: Arc<openraft::Config>,
    /// Where blocking work runs.
    io: Io,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Controller(node {})", self.me)
    }
}

impl Controller {
    pub(crate) fn new(
        me: NodeId,
        broker: Broker,
        router: Router,
        groups: Arc<Groups>,
        state_path: PathBuf,
        runtime: Handle,
        settings: Settings,
    ) -> Result<Controller> {
        let Settings {
            founders,
            replication_factor,
            raft_config,
            io,
        } = settings;
        let state: ControllerState = meta::read(&state_path)?.unwrap_or_default();
        for node in state.nodes.values() {
            router.set_peer(node.id, node.peer_address);
        }
        Ok(Controller {
            me,
            broker,
            router,
            groups,
            state_path,
            state: Mutex::new(state),
            replicas: tokio::sync::Mutex::new(BTreeMap::new()),
            stores: parking_lot::RwLock::default(),
            metadata: tokio::sync::OnceCell::new(),
            applied: watch::channel(0).0,
            outcomes: Mutex::new(VecDeque::new()),
            replication_factor,
            runtime,
            leaders: Arc::default(),
            coordinating: Arc::default(),
            transacting: Arc::default(),
            founders,
            registered: tokio::sync::Notify::new(),
            raft_config,
            io,
        })
    }

    /// What was applied when the state was last saved (the state machine starts there).
    pub(crate) fn saved(&self) -> (Option<LogId>, StoredMembership) {
        let s = self.state.lock();
        (s.applied, s.membership.clone())
    }

    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Runs `f`, which blocks, where the node's blocking work runs.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        self.io.blocking(f).await.map_err(cluster_error)?
    }

    pub(crate) fn nodes(&self) -> Vec<NodeInfo> {
        self.state.lock().nodes.values().cloned().collect()
    }

    pub(crate) fn assignment(&self, topic: &str, partition: u32) -> Option<Vec<NodeId>> {
        self.state
            .lock()
            .assignments
            .get(topic)?
            .replicas
            .get(partition as usize)
            .cloned()
    }

    /// The group of a partition of the topic's current incarnation.
    pub(crate) fn group_of(&self, topic: &str, partition: u32) -> Option<GroupId> {
        let incarnation = self.state.lock().assignments.get(topic)?.incarnation;
        Some(GroupId {
            topic: topic.to_string(),
            partition: partition as i32,
            incarnation,
        })
    }

    /// The topics the controller has assigned.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.state.lock().assignments.keys().cloned().collect()
    }

    /// The Raft groups of the replicas this node runs.
    pub(crate) async fn rafts(&self) -> Vec<crate::cluster::peer::Raft> {
        self.replicas
            .lock()
            .await
            .values()
            .map(|r| r.raft.clone())
            .collect()
    }

    /// Applies what the controller's state machine hands over, in order, until it stops.
    pub(crate) async fn run(self: Arc<Self>, mut applying: mpsc::UnboundedReceiver<Applying>) {
        while let Some(a) = applying.recv().await {
            let end = match &a.payload {
                Payload::Normal(records) => self.apply_records(a.id, &records.0).await,
                Payload::Membership(m, stored) => {
                    self.state.lock().membership = StoredMembership::new(Some(a.id), m.clone());
                    self.save(a.id)
                        .await
                        .map(|()| stored.as_ref().and_then(|r| next_offset(&r.0)))
                }
                Payload::Blank(stored) => Ok(stored.as_ref().and_then(|r| next_offset(&r.0))),
            };
            let end = match end {
                Ok(end) => end,
                Err(e) => {
                    // Not answering `done` fails the state machine: the node's controller
                    // replica stops rather than skip a change the other nodes made.
                    log::error!("node {}: the controller stops applying at {}: {e}", self.me, a.id);
                    return;
                }
            };
            if let Some(end) = end {
                self.applied.send_if_modified(|at| {
                    let moved = end > *at;
                    *at = (*at).max(end);
                    moved
                });
            }
            let _ = a.done.send(());
        }
    }

    /// Applies the commands of one batch; returns the offset after it. An entry this node
    /// cannot read or apply (a newer version's command, a full disk) is an error.
    async fn apply_records(&self, id: LogId, bytes: &[u8]) -> Result<Option<i64>> {
        let (batch, _) = Batch::parse(bytes).map_err(Error::InvalidBatch)?;
        let base = batch.header().base_offset;
        let mut commands = Vec::new();
        for record in batch.records().map_err(Error::InvalidBatch)?.iter() {
            let value = record.map_err(Error::InvalidBatch)?.value.unwrap_or_default();
            let command: Command = postcard::from_bytes(value)
                .map_err(|e| cluster_error(format!("controller entry {id} holds an unknown command: {e}")))?;
            commands.push(command);
        }
        for command in commands {
            let outcome = match self.execute(id, command).await {
                Ok(()) => Ok(()),
                Err(Failure::Refused(e)) => {
                    log::info!("node {}: controller entry {id}: {e}", self.me);
                    Err(e.to_string())
                }
                Err(Failure::Local(e)) => return Err(e),
            };
            let mut outcomes = self.outcomes.lock();
            if outcomes.len() == OUTCOMES_KEPT {
                outcomes.pop_front();
            }
            outcomes.push_back((base, outcome));
        }
        self.save(id).await?;
        Ok(Some(batch.header().next_offset()))
    }

    /// Saves what has been applied, up to `id`, once the controller's log is durable up to
    /// it (a node never remembers applying an entry that its log could lose).
    async fn save(&self, id: LogId) -> Result<()> {
        let state = {
            let mut s = self.state.lock();
            s.applied = Some(id);
            s.clone()
        };
        let log = self.metadata.get().map(|m| m.replica.log.clone());
        let path = self.state_path.clone();
        self.blocking(move || {
            if let Some(log) = log {
                match log.flush() {
                    // A truncation of entries after it synced the rest: the applied one is
                    // committed, so kept, and durable.
                    Ok(()) | Err(Error::Truncated { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            meta::write(&StdFs, &path, &state)
        })
        .await
    }

    /// Makes `command`'s change on this node; `id` is the command's entry.
    async fn execute(&self, id: LogId, command: Command) -> std::result::Result<(), Failure> {
        let broker = self.broker.clone();
        match command {
            Command::RegisterNode(node) => {
                self.router.set_peer(node.id, node.peer_address);
                let mut s = self.state.lock();
                s.joining.remove(&node.id);
                s.nodes.insert(node.id, node);
                self.registered.notify_one();
                Ok(())
            }
            Command::CreateTopic {
                name,
                partitions,
                config,
                replicas,
            } => {
                let n = name.clone();
                let created = self
                    .blocking(move || broker.inner.create_topic_here(&n, partitions, config))
                    .await;
                let ours = {
                    let mut s = self.state.lock();
                    match (&created, s.assignments.get(&name)) {
                        // Applied again after a crash (the broker has it; the saved state may not).
                        (Ok(()), _) | (Err(Error::TopicExists { .. }), None) => true,
                        (Err(Error::TopicExists { .. }), Some(a)) => a.incarnation == id.index,
                        _ => false,
                    }
                    .then(|| {
                        let assignment = Assignment {
                            incarnation: id.index,
                            replicas,
                        };
                        s.assignments.insert(name.clone(), assignment);
                    })
                    .is_some()
                };
                if !ours {
                    return created.map_err(Failure::from);
                }
                self.start_replicas(&name).await.map_err(Failure::Local)
            }
            Command::DeleteTopic { name } => {
                // The replicas stop before their files go.
                self.stop_replicas(&name).await;
                self.state.lock().assignments.remove(&name);
                let n = name.clone();
                let deleted = match self.blocking(move || broker.inner.delete_topic_here(&n)).await {
                    Ok(()) | Err(Error::UnknownTopic { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                };
                // The topic's committed offsets were deleted (by the submitter) through the
                // offsets topic: whichever node coordinates groups reads them again.
                self.broker.inner.forget_offsets();
                deleted
            }
            Command::AddPartitions { name, from, replicas } => {
                let total = {
                    let mut s = self.state.lock();
                    let Some(assigned) = s.assignments.get_mut(&name) else {
                        return Err(Failure::Refused(Error::UnknownTopic { topic: name }));
                    };
                    if assigned.replicas.len() as u32 != from {
                        return Err(Failure::Refused(Error::InvalidPartitions {
                            topic: name,
                            count: from + replicas.len() as u32,
                            reason: "the partition count changed while the change was decided",
                        }));
                    }
                    assigned.replicas.extend(replicas);
                    assigned.replicas.len() as u32
                };
                let n = name.clone();
                let added = self
                    .blocking(move || broker.inner.add_partitions_here(&n, total))
                    .await;
                match added {
                    Ok(()) => {}
                    // Applied again after a crash.
                    Err(_) if self.broker.partition_count(&name).is_ok_and(|c| c >= total) => {}
                    Err(e) => return Err(Failure::Local(e)),
                }
                self.start_replicas(&name).await.map_err(Failure::Local)
            }
            Command::AlterTopicConfig { name, config } => self
                .blocking(move || broker.inner.alter_topic_config_here(&name, config))
                .await
                .map_err(Failure::from),
            Command::Join(node) => {
                if let Some(why) = self.refuse_join(&node) {
                    return Err(Failure::Refused(cluster_error(why)));
                }
                self.router.set_peer(node.id, node.peer_address);
                let mut s = self.state.lock();
                if !s.nodes.contains_key(&node.id) {
                    s.joining.insert(node.id);
                }
                s.nodes.insert(node.id, node);
                self.registered.notify_one();
                Ok(())
            }
        }
    }

    /// Starts the Raft groups of the partitions of `topic` that this node holds and does not
    /// run yet; a new group is started with its members as the assignment says.
    pub(crate) async fn start_replicas(&self, topic: &str) -> Result<()> {
        // Held from reading the assignment on, so no deletion is applied in between.
        let mut running = self.replicas.lock().await;
        let assigned = self
            .state
            .lock()
            .assignments
            .get(topic)
            .cloned()
            .unwrap_or_default();
        for (p, nodes) in assigned.replicas.iter().enumerate() {
            let group = GroupId {
                topic: topic.to_string(),
                partition: p as i32,
                incarnation: assigned.incarnation,
            };
            if running.contains_key(&group) {
                continue;
            }
            if !nodes.contains(&self.me) {
                // In-process appends here go to the partition's leader; but not offset
                // commits, which the coordinator must apply (they fail here, as before).
                if topic != OFFSETS_TOPIC
                    && let Ok(log) = self.broker.partition(topic, p as u32)
                {
                    forward_appends(&log, self.me, self.router.clone(), group, self.groups.clone());
                }
                continue;
            }
            let log = self.broker.partition(topic, p as u32)?;
            // A transaction's first batch here is verified with its coordinator (not the state
            // topic's own records: the coordinator writes those).
            if topic != crate::txn::TRANSACTION_STATE_TOPIC {
                let (broker, tp) = (
                    Arc::downgrade(&self.broker.inner),
                    crate::TopicPartition::new(topic, p as u32),
                );
                let verify = move |producer_id, epoch, within| {
                    let broker: Arc<crate::broker::BrokerInner> = broker.upgrade().ok_or(Error::Closed)?;
                    broker.check_transaction(None, (producer_id, epoch), &tp, within)
                };
                log.verify_transactions_with(crate::storage::Verifier(Arc::new(verify)));
            }
            let replica = PartitionReplica::start(
                self.me,
                log,
                self.router.clone(),
                group.clone(),
                None,
                (self.io, self.raft_config.clone()),
            )
            .await?;
            if !replica.raft.is_initialized().await.map_err(cluster_error)? {
                let members: BTreeMap<NodeId, Node> = nodes.iter().map(|&n| (n, Node::default())).collect();
                // Every member starts the group with the same members: safe, and the group
                // forms even when some are down.
                if let Err(e) = replica.raft.initialize(members).await {
                    log::debug!("node {}: starting group {topic}-{p}: {e}", self.me);
                }
            }
            self.groups.insert(group.clone(), replica.raft.clone());
            self.groups
                .serve_reads(group.clone(), replica.replica.log.clone());
            self.watch_leader(group.clone(), &replica.raft, nodes.clone());
            self.stores.write().insert(group.clone(), replica.replica.clone());
            running.insert(group, replica);
        }
        Ok(())
    }

    /// Keeps the leaders table up to date with what `raft` (a replica of `group`, held by
    /// `replicas`) knows, until the replica stops.
    pub(crate) fn watch_leader(
        &self,
        group: GroupId,
        raft: &crate::cluster::peer::Raft,
        replicas: Vec<NodeId>,
    ) {
        let mut metrics = raft.metrics();
        let leaders = self.leaders.clone();
        // The leader of the offsets topic's partition coordinates groups; the state topic's,
        // transactions.
        let role = match (group.topic.as_str(), group.partition) {
            (OFFSETS_TOPIC, 0) => Some((self.coordinating.clone(), &GROUPS)),
            (crate::txn::TRANSACTION_STATE_TOPIC, 0) => Some((self.transacting.clone(), &TRANSACTIONS)),
            _ => None,
        };
        let role = role.map(|(coordinating, role)| {
            (
                raft.clone(),
                coordinating,
                Arc::downgrade(&self.broker.inner),
                (self.me, self.io),
                role,
            )
        });
        tokio::spawn(async move {
            loop {
                let placement = {
                    let m = metrics.borrow_watched();
                    let in_sync = match (&m.replication, m.last_log_index) {
                        (Some(progress), Some(last)) => progress
                            .iter()
                            .filter(|(_, matched)| matched.is_some_and(|id| id.index + IN_SYNC_LAG >= last))
                            .map(|(&id, _)| id)
                            .collect(),
                        _ => replicas.clone(),
                    };
                    Placement {
                        leader: m.current_leader,
                        epoch: m.current_term,
                        replicas: replicas.clone(),
                        in_sync,
                    }
                };
                if let Some((raft, coordinating, broker, me, role)) = &role {
                    take_over(raft, coordinating, broker, *me, &placement, role);
                }
                if leaders.read().get(&group) != Some(&placement) {
                    leaders.write().insert(group.clone(), placement);
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Where the terms of a partition's replica here end, for Kafka's OffsetForLeaderEpoch
    /// (see `EntryIndex::epoch_end`): `None` for a term past every one known, `NotHeld` for a
    /// partition of which this node runs no replica.
    pub(crate) fn epoch_end(
        &self,
        topic: &str,
        partition: u32,
        term: u64,
    ) -> std::result::Result<Option<(u64, i64)>, NotHeld> {
        let group = self.group_of(topic, partition).ok_or(NotHeld)?;
        let store = self.stores.read().get(&group).cloned().ok_or(NotHeld)?;
        let current = self.placement(&group).ok_or(NotHeld)?.epoch;
        Ok(store.index.read().epoch_end(term, current))
    }

    /// Where `group`'s replicas are, as this node last heard: from its own replica, or from
    /// the group's leader if this node holds none.
    pub(crate) fn placement(&self, group: &GroupId) -> Option<Placement> {
        if let Some(local) = self.leaders.read().get(group) {
            return Some(local.clone());
        }
        // Only for a group this node is not meant to hold: one it holds (starting, stopping)
        // has no leader it can name.
        if *group == controller_group() || self.assigned_here(group) {
            return None;
        }
        self.groups.heard(group)
    }

    /// Whether the controller's assignment puts a replica of `group` on this node.
    fn assigned_here(&self, group: &GroupId) -> bool {
        let state = self.state.lock();
        state.assignments.get(&group.topic).is_some_and(|a| {
            a.incarnation == group.incarnation
                && usize::try_from(group.partition)
                    .ok()
                    .and_then(|p| a.replicas.get(p))
                    .is_some_and(|nodes| nodes.contains(&self.me))
        })
    }

    /// Tells the other nodes, every [`LEADING_EVERY`], which groups this node leads, so that
    /// nodes that hold no replica of a partition can name its leader; until `stop`.
    pub(crate) async fn tell_leading(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut sending: HashMap<NodeId, Arc<std::sync::atomic::AtomicBool>> = HashMap::new();
        // Numbered from the clock, so that a node's lists after a restart follow its earlier
        // ones (a peer believes a stale list only for a few seconds anyway).
        let mut seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|&s| s) => return,
                _ = tokio::time::sleep(LEADING_EVERY) => {}
            }
            seq += 1;
            let leading: Arc<Vec<(GroupId, Placement)>> = Arc::new(
                self.leaders
                    .read()
                    .iter()
                    .filter(|(_, p)| p.leader == Some(self.me))
                    .map(|(g, p)| (g.clone(), p.clone()))
                    .collect(),
            );
            for node in self.nodes() {
                if node.id == self.me {
                    continue;
                }
                // One list in flight per peer: a peer that does not answer skips lists rather
                // than queue them.
                let busy = sending.entry(node.id).or_default().clone();
                if busy.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let router = self.router.clone();
                let leading = leading.clone();
                let me = self.me;
                tokio::spawn(async move {
                    if let Err(e) = router.tell_leading(node.id, seq, Vec::clone(&leading)).await {
                        log::debug!("node {me}: telling node {} what it leads: {e}", node.id);
                    }
                    busy.store(false, std::sync::atomic::Ordering::SeqCst);
                });
            }
        }
    }

    /// Registers `node`, which asks to join the cluster through this node; answers with the
    /// cluster's nodes once this node has applied the registration (see
    /// [`Controller::refuse_join`] for what is refused).
    pub(crate) async fn admit(&self, node: NodeInfo) -> std::result::Result<Welcome, NotJoined> {
        let refused = |why: String| Err(NotJoined::Refused(why));
        if node.id > MAX_NODE_ID {
            return refused(format!("node ids are at most {MAX_NODE_ID}, not {}", node.id));
        }
        if node
            .kafka_address
            .as_ref()
            .is_some_and(|a| a.len() > MAX_KAFKA_ADDRESS)
        {
            return refused(format!("a Kafka address is at most {MAX_KAFKA_ADDRESS} bytes"));
        }
        // Checked here to answer at once, and again where it counts: as the controller
        // applies the join, in log order with any other join under the same id.
        if let Some(why) = self.refuse_join(&node) {
            return refused(why);
        }
        let welcome = || Welcome {
            founders: self.founders.clone(),
            nodes: self.nodes(),
        };
        // Asked again (its answer was lost): nothing more to decide.
        if self.state.lock().nodes.get(&node.id) == Some(&node) {
            return Ok(welcome());
        }
        if !self.router.reachable(node.peer_address).await {
            return refused(format!(
                "node {} cannot reach node {}'s peer address {}",
                self.me, node.id, node.peer_address
            ));
        }
        match self.submit(Command::Join(node.clone())).await {
            Ok(()) => Ok(welcome()),
            // Refused as the command was applied, or not decided yet.
            Err(e) => match self.refuse_join(&node) {
                Some(why) => refused(why),
                None => Err(NotJoined::Unavailable(e.to_string())),
            },
        }
    }

    /// Why `node` may not join, if it may not: its id is a founder's, or a registered node's
    /// at another address, or that of a node that started and holds replicas (a node that
    /// lost its data must not come back under its old id; one that joined and never started
    /// may ask again, as after a crash before it heard the answer).
    fn refuse_join(&self, node: &NodeInfo) -> Option<String> {
        if self.founders.iter().any(|f| f.0 == node.id) {
            return Some(format!(
                "node {} is a founding voter of the cluster: it starts with the voters list",
                node.id
            ));
        }
        let s = self.state.lock();
        let known = s.nodes.get(&node.id)?;
        if known.peer_address != node.peer_address {
            return Some(format!(
                "node id {} is taken by the node at {}",
                node.id, known.peer_address
            ));
        }
        let holds = s
            .assignments
            .values()
            .any(|a| a.replicas.iter().any(|r| r.contains(&node.id)));
        (holds && !s.joining.contains(&node.id)).then(|| {
            format!(
                "node {} holds replicas: it restarts with its data directory, or joins under a \
                 new id",
                node.id
            )
        })
    }

    /// At the controller's leader, adds every founding and registered node that its group
    /// lacks as a learner (so it applies the metadata log), until `stop`.
    pub(crate) async fn add_learners(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|&s| s) => return,
                _ = self.registered.notified() => {}
                _ = tokio::time::sleep(LEARNERS_EVERY) => {}
            }
            let Some(metadata) = self.metadata.get() else {
                continue;
            };
            let raft = metadata.raft.clone();
            let missing: Vec<NodeId> = {
                let m = raft.metrics().borrow_watched().clone();
                if m.current_leader != Some(self.me) {
                    continue;
                }
                let membership = m.membership_config.membership();
                let members: Vec<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
                let s = self.state.lock();
                let wanted = self.founders.iter().map(|f| f.0).chain(s.nodes.keys().copied());
                wanted.filter(|id| !members.contains(id)).collect()
            };
            for id in missing {
                // One membership entry each; a change still in progress fails this one,
                // which the next round tries again.
                match raft.add_learner(id, Node::default(), false).await {
                    Ok(_) => log::info!("node {}: node {id} follows the controller", self.me),
                    Err(e) => {
                        log::debug!("node {}: adding node {id} to the controller: {e}", self.me);
                        break;
                    }
                }
            }
        }
    }

    /// Stops this node's replicas of `topic`.
    async fn stop_replicas(&self, topic: &str) {
        let mut running = self.replicas.lock().await;
        let groups: Vec<GroupId> = running.keys().filter(|g| g.topic == topic).cloned().collect();
        for group in groups {
            self.groups.remove(&group);
            self.leaders.write().remove(&group);
            self.stores.write().remove(&group);
            if let Some(replica) = running.remove(&group)
                && let Err(e) = replica.shutdown().await
            {
                log::warn!("node {}: stopping {topic}-{}: {e}", self.me, group.partition);
            }
        }
    }

    /// Stops every replica this node runs (the controller's last).
    pub(crate) async fn stop_all(&self) {
        let mut running = self.replicas.lock().await;
        // Nothing is led here from now on: Kafka clients are sent elsewhere.
        self.leaders.write().clear();
        self.stores.write().clear();
        for (group, replica) in std::mem::take(&mut *running) {
            self.groups.remove(&group);
            let _ = replica.shutdown().await;
        }
        if let Some(metadata) = self.metadata.get() {
            self.groups.remove(&controller_group());
            let _ = metadata.shutdown().await;
            // Not a topic of the broker's, which closes those. (Closing syncs: off the runtime.)
            let log = metadata.replica.log.clone();
            if let Err(e) = self.blocking(move || log.close()).await {
                log::warn!("node {}: closing the controller's log: {e}", self.me);
            }
        }
    }

    /// Creates `name` with its partitions spread over the cluster (as the broker's
    /// `create_topic` does in a cluster), without holding a thread while it waits.
    pub(crate) async fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        self.broker.inner.check_topic(name, partitions, &config)?;
        let rf = self.replication(config.replication_factor)?;
        let replicas = self.assign(0, partitions, rf);
        self.check_assignment(&replicas)?;
        let command = Command::CreateTopic {
            name: name.to_string(),
            partitions,
            config,
            replicas,
        };
        self.submit(command).await
    }

    /// Proposes `command` and waits until this node has applied it; returns what it came to.
    pub(crate) async fn submit(&self, command: Command) -> Result<()> {
        let metadata = self
            .metadata
            .get()
            .ok_or_else(|| cluster_error("the controller has not started"))?;
        let value = postcard::to_stdvec(&command).map_err(cluster_error)?;
        let mut b = BatchBuilder::new(Compression::None);
        b.push(crate::storage::now_ms(), None, Some(&value), &[]);
        let appended = metadata.propose(b.finish()?).await?;
        let mut applied = self.applied.subscribe();
        let reached =
            tokio::time::timeout(APPLY_TIMEOUT, applied.wait_for(|&at| at > appended.base_offset)).await;
        if !matches!(reached, Ok(Ok(_))) {
            return Err(cluster_error(format!(
                "the change was decided but not applied on this node within {APPLY_TIMEOUT:?}"
            )));
        }
        let outcome = self
            .outcomes
            .lock()
            .iter()
            .find(|(at, _)| *at == appended.base_offset)
            .map(|(_, o)| o.clone());
        match outcome {
            Some(Ok(())) | None => Ok(()),
            Some(Err(why)) => Err(outcome_error(&command, why)),
        }
    }

    /// Which nodes should hold each of `count` new partitions, the first `first`: spread
    /// round-robin over the cluster's nodes, `replication_factor` each (at most all nodes).
    /// The nodes that may hold replicas: the founding voters, whether or not they have
    /// registered yet, and any other node that has joined and started.
    fn holders(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = {
            let s = self.state.lock();
            let voters = s.membership.voter_ids().chain(self.founders.iter().map(|f| f.0));
            let started = s.nodes.keys().filter(|id| !s.joining.contains(id));
            voters.chain(started.copied()).collect()
        };
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.is_empty() { vec![self.me] } else { nodes }
    }

    /// The replication factor `asked` for (the cluster's default, at most the number of
    /// nodes, for `None`), if the nodes can meet it.
    pub(crate) fn replication(&self, asked: Option<u16>) -> Result<usize> {
        let nodes = self.holders().len();
        match asked.map(usize::from) {
            None => Ok(self.replication_factor.clamp(1, nodes)),
            Some(n) if n == 0 || n > nodes => Err(Error::InvalidReplicationFactor {
                requested: n as u64,
                available: nodes,
            }),
            Some(n) => Ok(n),
        }
    }

    /// Replicas for partitions `first..first + count`, `rf` nodes each, spread in turn.
    pub(crate) fn assign(&self, first: u32, count: u32, rf: usize) -> Vec<Vec<NodeId>> {
        let nodes = self.holders();
        let rf = rf.clamp(1, nodes.len());
        (first..first + count)
            .map(|p| (0..rf).map(|i| nodes[(p as usize + i) % nodes.len()]).collect())
            .collect()
    }

    /// Checks replica assignments given by a client: each partition held by the same number
    /// of distinct, known nodes.
    fn check_assignment(&self, replicas: &[Vec<NodeId>]) -> Result<()> {
        let nodes = self.holders();
        let bad = |reason: String| Err(Error::InvalidReplicaAssignment { reason });
        let Some(first) = replicas.first() else {
            return bad("no partitions".into());
        };
        for (p, r) in replicas.iter().enumerate() {
            if r.is_empty() || r.len() != first.len() {
                return bad(format!(
                    "partition {p} has {} replicas where {} are due",
                    r.len(),
                    first.len()
                ));
            }
            if let Some(n) = r.iter().find(|n| !nodes.contains(n)) {
                return bad(format!(
                    "partition {p} names node {n}, which is not a node of the cluster"
                ));
            }
            let mut sorted = r.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != r.len() {
                return bad(format!("partition {p} names a node twice"));
            }
        }
        Ok(())
    }

    /// How many nodes hold each partition of `topic`.
    pub(crate) fn replication_of(&self, topic: &str) -> Option<usize> {
        Some(self.state.lock().assignments.get(topic)?.replicas.first()?.len())
    }
}

/// For the deterministic simulation, which drives whole nodes without threads of its own.
#[cfg(test)]
impl Controller {
    /// The Raft groups this node runs (the controller's first), with their logs.
    pub(crate) fn members(&self) -> Vec<(GroupId, crate::cluster::peer::Raft, Arc<Replica>)> {
        let mut out = Vec::new();
        if let Some(m) = self.metadata.get() {
            out.push((controller_group(), m.raft.clone(), m.replica.clone()));
        }
        let stores = self.stores.read().clone();
        for (group, store) in stores {
            if let Some(raft) = self.groups.get(&group) {
                out.push((group, raft, store));
            }
        }
        out
    }

    /// Appends `batch` to a partition this node holds a replica of, at whichever node leads
    /// it, as the broker's appends do (without a thread that waits).
    pub(crate) async fn propose(
        &self,
        topic: &str,
        partition: u32,
        batch: crate::storage::RecordBatch,
    ) -> Result<crate::cluster::raft::Appended> {
        let group = self
            .group_of(topic, partition)
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.to_string(),
            })?;
        let appender = self.replicas.lock().await.get(&group).map(|r| r.appender());
        let appender =
            appender.ok_or_else(|| cluster_error(format!("no replica of {topic}-{partition} runs here")))?;
        appender.append_anywhere(batch).await
    }
}

/// How often a node tells the others which groups it leads (a peer believes it for
/// `peer::HEARD_FOR`).
const LEADING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a node does when it starts or stops coordinating something for the cluster (as the
/// leader of a partition that keeps its state): `take` (on the blocking pool, once everything
/// committed before its term is applied here) reads the state afresh for the term and says
/// whether it did; `release` forgets it.
struct Role {
    take: fn(&Arc<crate::broker::BrokerInner>, u64) -> bool,
    /// Lets go of what was taken in the term given, or earlier.
    release: fn(&Arc<crate::broker::BrokerInner>, u64),
    /// Whether `release` leaves a later term's take-over alone by itself (else it is called
    /// only while no take-over has begun).
    term_aware: bool,
}

/// Groups: whatever the node knew of them from an earlier term is stale, and the offsets are
/// read again.
const GROUPS: Role = Role {
    take: |broker, _| {
        broker.groups.reset();
        broker.forget_offsets();
        true
    },
    release: |broker, _| broker.groups.reset(),
    term_aware: false,
};

/// Transactions: a coordinator of the term reads their states (the earlier one stops).
const TRANSACTIONS: Role = Role {
    take: |broker, term| match broker.take_over_transactions(term) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("taking over the transactions in term {term}: {e}");
            false
        }
    },
    release: |broker, term| broker.release_transactions(term),
    term_aware: true,
};

/// Has this node take on `role` once it leads the partition that keeps its state and has
/// applied everything committed there; stops it as soon as it does not lead.
fn take_over(
    raft: &crate::cluster::peer::Raft,
    coordinating: &Arc<Coordinating>,
    broker: &std::sync::Weak<crate::broker::BrokerInner>,
    (me, io): (NodeId, Io),
    placement: &Placement,
    role: &'static Role,
) {
    use std::sync::atomic::Ordering;
    let term = placement.epoch;
    if placement.leader != Some(me) {
        coordinating.claimed.store(0, Ordering::SeqCst);
        // It coordinated until now: it lets go (its groups' members are sent on to the node
        // that does), unless it has taken over again by the time this runs.
        let was = coordinating.term.swap(0, Ordering::SeqCst);
        if was != 0
            && let Some(broker) = broker.upgrade()
        {
            let still = coordinating.clone();
            tokio::spawn(io.blocking(move || {
                if role.term_aware || still.claimed.load(Ordering::SeqCst) == 0 {
                    (role.release)(&broker, was);
                }
            }));
        }
        return;
    }
    // One take-over per term (the metrics change with every heartbeat's answer).
    if coordinating.claimed.swap(term, Ordering::SeqCst) == term {
        return;
    }
    let (raft, coordinating, broker) = (raft.clone(), coordinating.clone(), broker.clone());
    tokio::spawn(async move {
        // Leads in this term, its leadership established (a stopped replica keeps reporting
        // the leader and term it last had, but not this state).
        let leads = || {
            let m = raft.metrics().borrow_watched().clone();
            m.state == openraft::ServerState::Leader && m.current_leader == Some(me) && m.current_term == term
        };
        // Tried again while this node leads in this term, at a pause: asking again at every
        // change of the metrics, when a read fails at once, would spin.
        loop {
            while leads() {
                // Everything committed before this term is applied here once a read is
                // linearizable.
                let read = raft
                    .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
                    .await;
                if let Err(openraft::error::RaftError::Fatal(_)) = read {
                    return; // the replica has stopped
                }
                let Some(broker) = broker.upgrade() else { return };
                if read.is_ok() && leads() {
                    // Off the workers: a commit may hold a group's lock.
                    let taking = broker.clone();
                    let taken = io.blocking(move || (role.take)(&taking, term)).await;
                    let taken = taken.is_ok_and(|taken| taken);
                    if taken && leads() {
                        coordinating.term.store(term, Ordering::SeqCst);
                        return;
                    }
                    // Taken, but no longer leading in this term: let go, unless a later
                    // term's take-over has begun.
                    let claimed = coordinating.claimed.load(Ordering::SeqCst);
                    if taken && (role.term_aware || claimed == term || claimed == 0) {
                        let _ = io.blocking(move || (role.release)(&broker, term)).await;
                    }
                }
                tokio::time::sleep(TAKE_OVER_RETRY).await;
            }
            // Not taken over: a later change of the metrics tries again. One that came while
            // this task held the claim found it taken; if it made this node lead after all, the
            // claim is taken back and the take-over tried again here (a leader alone may see no
            // further change).
            let released = coordinating
                .claimed
                .compare_exchange(term, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            let again = released
                && leads()
                && coordinating
                    .claimed
                    .compare_exchange(0, term, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
            if !again {
                return;
            }
        }
    });
}

/// How long a node that leads the offsets topic waits before it tries again to take the
/// groups over.
const TAKE_OVER_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether this node coordinates the cluster's groups (or transactions): the term in which it
/// took them over (0: it does not), and the term whose take-over has begun.
#[derive(Debug, Default)]
pub(crate) struct Coordinating {
    term: std::sync::atomic::AtomicU64,
    claimed: std::sync::atomic::AtomicU64,
}

/// The error a submitter gets for a command its node applied with `why`.
fn outcome_error(command: &Command, why: String) -> Error {
    match command {
        Command::CreateTopic { name, .. } if why.contains("already exists") => {
            Error::TopicExists { topic: name.clone() }
        }
        Command::DeleteTopic { name }
        | Command::AlterTopicConfig { name, .. }
        | Command::AddPartitions { name, .. }
            if why.contains("unknown topic") =>
        {
            Error::UnknownTopic { topic: name.clone() }
        }
        _ => cluster_error(why),
    }
}

fn next_offset(bytes: &[u8]) -> Option<i64> {
    Batch::parse(bytes).ok().map(|(b, _)| b.header().next_offset())
}

/// A node's cluster settings, as its controller keeps them.
pub(crate) struct Settings {
    /// The cluster's founding nodes and their peer addresses.
    pub(crate) founders: Vec<(NodeId, SocketAddr)>,
    /// The replication factor of new topics that ask for none.
    pub(crate) replication_factor: usize,
    /// Raft's settings for the node's groups.
    pub(crate) raft_config: Arc<openraft::Config>,
    /// Where blocking work runs (the blocking pool; inline in the simulation).
    pub(crate) io: Io,
}

/// The broker's topic changes, decided by the controller. (The controller holds the broker:
/// the broker holds it weakly.)
#[derive(Debug)]
pub(crate) struct Coordinator(pub(crate) std::sync::Weak<Controller>);

impl Coordinator {
    fn get(&self) -> Result<Arc<Controller>> {
        self.0
            .upgrade()
            .ok_or_else(|| cluster_error("the cluster has stopped"))
    }
}

impl Coordinate for Coordinator {
    fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        let c = self.get()?;
        let rf = c.replication(config.replication_factor)?;
        let replicas = c.assign(0, partitions, rf);
        self.create_topic_assigned(name, replicas, config, false)
    }

    fn create_topic_assigned(
        &self,
        name: &str,
        replicas: Vec<Vec<u64>>,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<()> {
        let c = self.get()?;
        c.check_assignment(&replicas)?;
        if validate_only {
            return Ok(());
        }
        let command = Command::CreateTopic {
            name: name.to_string(),
            partitions: replicas.len() as u32,
            config,
            replicas,
        };
        run_on(&c.runtime.clone(), async move { c.submit(command).await })
    }

    fn check_replication(&self, factor: Option<u16>) -> Result<usize> {
        self.get()?.replication(factor)
    }

    fn replication_of(&self, topic: &str) -> Option<usize> {
        self.get().ok()?.replication_of(topic)
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let c = self.get()?;
        // The topic's committed offsets go first, once for the cluster (the offsets topic is
        // replicated like any other), as a single node deletes them.
        if c.broker.inner.topic(crate::group::OFFSETS_TOPIC).is_ok() {
            c.broker.inner.offsets()?.delete_topic(name)?;
        }
        let command = Command::DeleteTopic {
            name: name.to_string(),
        };
        run_on(&c.runtime.clone(), async move { c.submit(command).await })
    }

    fn add_partitions(&self, name: &str, total: u32) -> Result<()> {
        let c = self.get()?;
        let current = c.broker.partition_count(name)?;
        // New partitions are held by as many nodes as the topic's others.
        let rf = match c.replication_of(name) {
            Some(rf) => rf,
            None => c.replication(None)?,
        };
        let replicas = c.assign(current, total.saturating_sub(current), rf);
        self.add_partitions_assigned(name, total, replicas, false)
    }

    fn add_partitions_assigned(
        &self,
        name: &str,
        total: u32,
        replicas: Vec<Vec<u64>>,
        validate_only: bool,
    ) -> Result<()> {
        let c = self.get()?;
        let current = c.broker.partition_count(name)?;
        let new = total.saturating_sub(current) as usize;
        if replicas.len() != new {
            return Err(Error::InvalidReplicaAssignment {
                reason: format!("{} assignments for {new} new partitions", replicas.len()),
            });
        }
        c.check_assignment(&replicas)?;
        // As many replicas as the topic's other partitions, as Kafka wants.
        if let Some(rf) = c.replication_of(name)
            && replicas[0].len() != rf
        {
            return Err(Error::InvalidReplicaAssignment {
                reason: format!(
                    "{} replicas for each new partition where the topic's others have {rf}",
                    replicas[0].len()
                ),
            });
        }
        if validate_only {
            return Ok(());
        }
        let command = Command::AddPartitions {
            name: name.to_string(),
            from: current,
            replicas,
        };
        run_on(&c.runtime.clone(), async move { c.submit(command).await })
    }

    fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()> {
        let c = self.get()?;
        let command = Command::AlterTopicConfig {
            name: name.to_string(),
            config,
        };
        run_on(&c.runtime.clone(), async move { c.submit(command).await })
    }

    fn node_id(&self) -> u64 {
        self.get().map_or(0, |c| c.me)
    }

    fn kafka_nodes(&self) -> Vec<(u64, Option<String>)> {
        let nodes = self.get().map(|c| c.nodes()).unwrap_or_default();
        nodes.into_iter().map(|n| (n.id, n.kafka_address)).collect()
    }

    fn controller(&self) -> Option<u64> {
        self.get()
            .ok()?
            .placement(&controller_group())
            .and_then(|p| p.leader)
    }

    fn coordinates_groups(&self) -> bool {
        self.get().is_ok_and(|c| {
            let term = c.coordinating.term.load(std::sync::atomic::Ordering::SeqCst);
            let group = c.group_of(OFFSETS_TOPIC, 0);
            let placement = group.and_then(|g| c.placement(&g));
            term != 0 && placement.is_some_and(|p| p.leader == Some(c.me) && p.epoch == term)
        })
    }

    fn group_coordinator(&self, group: &str) -> Result<Option<Arc<dyn crate::group::RemoteCoordinator>>> {
        if self.coordinates_groups() {
            return Ok(None);
        }
        let c = self.get()?;
        let placement = c.group_of(OFFSETS_TOPIC, 0).and_then(|g| c.placement(&g));
        match placement.and_then(|p| p.leader) {
            Some(leader) if leader != c.me => Ok(Some(crate::cluster::groups::at(
                leader,
                c.router.clone(),
                c.runtime.clone(),
            ))),
            // No leader, or this node leads and is still reading the commits.
            _ => Err(Error::CoordinatorNotAvailable {
                group: group.to_string(),
            }),
        }
    }

    fn epoch_end(
        &self,
        topic: &str,
        partition: u32,
        epoch: u64,
    ) -> std::result::Result<Option<(u64, i64)>, NotHeld> {
        self.get()
            .map_err(|_| NotHeld)?
            .epoch_end(topic, partition, epoch)
    }

    fn placement(&self, topic: &str, partition: u32) -> Option<Placement> {
        let c = self.get().ok()?;
        c.placement(&c.group_of(topic, partition)?)
    }

    fn append_leading(&self, topic: &str, partition: u32, term: u64, batch: RecordBatch) -> Result<()> {
        let (c, raft) = self.leading(topic, partition, term)?;
        let not_leading = || not_leading(c.me, topic, partition, term);
        let mut batch = batch;
        batch.set_base_offset(crate::cluster::entry::UNASSIGNED);
        let records = crate::cluster::entry::Records(batch.into_bytes());
        let written = run_on(&c.runtime.clone(), async move {
            let written = tokio::time::timeout(APPEND_LEADING_TIMEOUT, raft.client_write(records)).await;
            match written {
                Ok(Ok(w)) => Ok(Some(crate::cluster::raft::term_of(&w.log_id))),
                Ok(Err(openraft::error::RaftError::APIError(
                    openraft::error::ClientWriteError::ForwardToLeader(_),
                ))) => Ok(None),
                Ok(Err(e)) => Err(cluster_error(e)),
                Err(_) => Err(cluster_error(format!(
                    "not committed within {APPEND_LEADING_TIMEOUT:?}: the outcome is unknown"
                ))),
            }
        })?;
        match written {
            Some(t) if t == term => Ok(()),
            // Written in a later term this node leads again (it lost and won an election
            // between its check and the write): the record is in, but its writer is stale;
            // the later term's take-over reads it after the writer has stopped.
            Some(t) => {
                log::warn!("{topic}-{partition}: a record of term {term}'s writer landed in term {t}");
                Err(not_leading())
            }
            None => Err(not_leading()),
        }
    }

    fn confirm_leading(&self, topic: &str, partition: u32, term: u64) -> Result<()> {
        let (c, raft) = self.leading(topic, partition, term)?;
        let me = c.me;
        let confirmed = run_on(&c.runtime.clone(), async move {
            let read = raft
                .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
                .await;
            let m = raft.metrics().borrow_watched().clone();
            Ok(read.is_ok() && m.current_leader == Some(me) && m.current_term == term)
        })?;
        match confirmed {
            true => Ok(()),
            false => Err(not_leading(me, topic, partition, term)),
        }
    }

    fn check_transaction(
        &self,
        transactional_id: Option<&str>,
        producer: (i64, i16),
        tp: &crate::TopicPartition,
        within: std::time::Duration,
    ) -> Result<()> {
        self.remote_transactions()?
            .check_transaction(transactional_id, producer, tp, within)
    }

    fn transaction_coordinator(&self) -> Result<Arc<dyn crate::txn::TxnCalls>> {
        Ok(Arc::new(self.remote_transactions()?))
    }
}

/// The error for a node that does not lead `topic`'s `partition` in `term` (any more).
fn not_leading(me: NodeId, topic: &str, partition: u32, term: u64) -> Error {
    Error::NotCoordinator {
        reason: format!("node {me} does not lead {topic}-{partition} in term {term}"),
    }
}

impl Coordinator {
    /// This node's replica of `topic`'s `partition`, if it leads it in `term` as far as it
    /// knows.
    fn leading(
        &self,
        topic: &str,
        partition: u32,
        term: u64,
    ) -> Result<(Arc<Controller>, crate::cluster::peer::Raft)> {
        let c = self.get()?;
        let refuse = || not_leading(c.me, topic, partition, term);
        let group = c.group_of(topic, partition).ok_or_else(refuse)?;
        let raft = c.groups.get(&group).ok_or_else(refuse)?;
        let m = raft.metrics().borrow_watched().clone();
        if m.state != openraft::ServerState::Leader
            || m.current_leader != Some(c.me)
            || m.current_term != term
        {
            return Err(refuse());
        }
        Ok((c, raft))
    }

    /// The transaction coordinator at the node that leads the state topic, when that is
    /// another node (this one would have its own open).
    fn remote_transactions(&self) -> Result<crate::cluster::groups::RemoteGroups> {
        let c = self.get()?;
        let placement = c
            .group_of(crate::txn::TRANSACTION_STATE_TOPIC, 0)
            .and_then(|g| c.placement(&g));
        match placement.and_then(|p| p.leader) {
            Some(leader) if leader != c.me => Ok(crate::cluster::groups::RemoteGroups {
                target: leader,
                router: c.router.clone(),
                runtime: c.runtime.clone(),
            }),
            Some(_) => Err(Error::NotCoordinator {
                reason: "this node is still reading the transactions' states".to_string(),
            }),
            None => Err(Error::NotCoordinator {
                reason: "no node coordinates transactions yet".to_string(),
            }),
        }
    }
}

/// How long a coordinator's state record waits to be committed.
const APPEND_LEADING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
