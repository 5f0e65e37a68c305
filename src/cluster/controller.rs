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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::broker::{Broker, Coordinate, Placement};
use crate::cluster::entry::Payload;
use crate::cluster::partition::{PartitionReplica, cluster_error};
use crate::cluster::peer::{GroupId, Groups, Router};
use crate::cluster::raft::{LogId, Node, NodeId, StoredMembership};
use crate::cluster::state_machine::Applying;
use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::storage::format::Batch;
use crate::storage::{BatchBuilder, Compression, StdFs, meta};

/// The controller's group id (no topic has an empty name).
pub(crate) fn controller_group() -> GroupId {
    GroupId {
        topic: String::new(),
        partition: 0,
    }
}

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
        /// The nodes holding each new partition.
        replicas: Vec<Vec<NodeId>>,
    },
    AlterTopicConfig {
        name: String,
        config: TopicConfig,
    },
}

/// What `controller.meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ControllerState {
    pub(crate) applied: Option<LogId>,
    pub(crate) membership: StoredMembership,
    pub(crate) nodes: BTreeMap<NodeId, NodeInfo>,
    /// The nodes holding each partition of each topic.
    pub(crate) assignments: BTreeMap<String, Vec<Vec<NodeId>>>,
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
    replicas: tokio::sync::Mutex<HashMap<GroupId, PartitionReplica>>,
    /// The controller's own replica, once started.
    pub(crate) metadata: tokio::sync::OnceCell<PartitionReplica>,
    /// The offset after the last entry applied here.
    applied: watch::Sender<i64>,
    /// What the last commands applied here came to, by their offset.
    outcomes: Mutex<VecDeque<(i64, std::result::Result<(), String>)>>,
    /// The replication factor of new topics: at most this many nodes hold a partition.
    pub(crate) replication_factor: usize,
    runtime: Handle,
    /// Where each group's replicas are, as this node's replicas last saw it.
    leaders: Arc<parking_lot::RwLock<HashMap<GroupId, Placement>>>,
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
    ) -> Result<Controller> {
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
            replicas: tokio::sync::Mutex::new(HashMap::new()),
            metadata: tokio::sync::OnceCell::new(),
            applied: watch::channel(0).0,
            outcomes: Mutex::new(VecDeque::new()),
            replication_factor: 3,
            runtime,
            leaders: Arc::default(),
        })
    }

    /// What was applied when the state was last saved (the state machine starts there).
    pub(crate) fn saved(&self) -> (Option<LogId>, StoredMembership) {
        let s = self.state.lock();
        (s.applied, s.membership.clone())
    }

    pub(crate) fn nodes(&self) -> Vec<NodeInfo> {
        self.state.lock().nodes.values().cloned().collect()
    }

    pub(crate) fn assignment(&self, topic: &str, partition: u32) -> Option<Vec<NodeId>> {
        self.state
            .lock()
            .assignments
            .get(topic)?
            .get(partition as usize)
            .cloned()
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
                    self.save(a.id);
                    stored.as_ref().and_then(|r| next_offset(&r.0))
                }
                Payload::Blank(stored) => stored.as_ref().and_then(|r| next_offset(&r.0)),
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

    /// Applies the commands of one batch; returns the offset after it.
    async fn apply_records(&self, id: LogId, bytes: &[u8]) -> Option<i64> {
        let Ok((batch, _)) = Batch::parse(bytes) else {
            log::error!("node {}: an unreadable controller entry {id}", self.me);
            return None;
        };
        let base = batch.header().base_offset;
        let commands: Vec<Command> = match batch.records() {
            Ok(records) => records
                .iter()
                .filter_map(|r| r.ok())
                .filter_map(|r| r.value.and_then(|v| postcard::from_bytes(v).ok()))
                .collect(),
            Err(_) => Vec::new(),
        };
        for command in commands {
            let outcome = self.execute(command).await;
            if let Err(e) = &outcome {
                log::info!("node {}: controller entry {id}: {e}", self.me);
            }
            let mut outcomes = self.outcomes.lock();
            if outcomes.len() == OUTCOMES_KEPT {
                outcomes.pop_front();
            }
            outcomes.push_back((base, outcome.map_err(|e| e.to_string())));
        }
        self.save(id);
        Some(batch.header().next_offset())
    }

    fn save(&self, id: LogId) {
        let state = {
            let mut s = self.state.lock();
            s.applied = Some(id);
            s.clone()
        };
        if let Err(e) = meta::write(&StdFs, &self.state_path, &state) {
            // The node replays from the last saved point on its next start.
            log::error!("node {}: saving the controller's state: {e}", self.me);
        }
    }

    /// Makes `command`'s change on this node.
    async fn execute(&self, command: Command) -> Result<()> {
        let broker = self.broker.clone();
        match command {
            Command::RegisterNode(node) => {
                self.router.set_peer(node.id, node.peer_address);
                self.state.lock().nodes.insert(node.id, node);
                Ok(())
            }
            Command::CreateTopic {
                name,
                partitions,
                config,
                replicas,
            } => {
                self.state
                    .lock()
                    .assignments
                    .entry(name.clone())
                    .or_insert(replicas);
                let n = name.clone();
                let created = blocking(move || broker.inner.create_topic_here(&n, partitions, config)).await;
                match created {
                    Ok(()) | Err(Error::TopicExists { .. }) => self.start_replicas(&name).await?,
                    Err(e) => return Err(e),
                }
                created
            }
            Command::DeleteTopic { name } => {
                self.stop_replicas(&name).await;
                self.state.lock().assignments.remove(&name);
                let n = name.clone();
                blocking(move || broker.inner.delete_topic_here(&n)).await
            }
            Command::AddPartitions { name, replicas } => {
                let total = {
                    let mut s = self.state.lock();
                    let assigned = s.assignments.entry(name.clone()).or_default();
                    assigned.extend(replicas);
                    assigned.len() as u32
                };
                let n = name.clone();
                let added = blocking(move || broker.inner.add_partitions_here(&n, total)).await;
                if added.is_ok() || self.broker.partition_count(&name).is_ok_and(|c| c >= total) {
                    self.start_replicas(&name).await?;
                }
                added
            }
            Command::AlterTopicConfig { name, config } => {
                blocking(move || broker.inner.alter_topic_config_here(&name, config)).await
            }
        }
    }

    /// Starts the Raft groups of the partitions of `topic` that this node holds and does not
    /// run yet; a new group is started with its members as the assignment says.
    pub(crate) async fn start_replicas(&self, topic: &str) -> Result<()> {
        let assigned = self
            .state
            .lock()
            .assignments
            .get(topic)
            .cloned()
            .unwrap_or_default();
        let mut running = self.replicas.lock().await;
        for (p, nodes) in assigned.iter().enumerate() {
            let group = GroupId {
                topic: topic.to_string(),
                partition: p as i32,
            };
            if !nodes.contains(&self.me) || running.contains_key(&group) {
                continue;
            }
            let log = self.broker.partition(topic, p as u32)?;
            let replica =
                PartitionReplica::start(self.me, log, self.router.clone(), group.clone(), None).await?;
            if !replica.raft.is_initialized().await.map_err(cluster_error)? {
                let members: BTreeMap<NodeId, Node> = nodes.iter().map(|&n| (n, Node::default())).collect();
                // Every member starts the group with the same members: safe, and the group
                // forms even when some are down.
                if let Err(e) = replica.raft.initialize(members).await {
                    log::debug!("node {}: starting group {topic}-{p}: {e}", self.me);
                }
            }
            self.groups.insert(group.clone(), replica.raft.clone());
            self.watch_leader(group.clone(), &replica.raft, nodes.clone());
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
                if leaders.read().get(&group) != Some(&placement) {
                    leaders.write().insert(group.clone(), placement);
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Where `group`'s replicas are, as this node last heard.
    pub(crate) fn placement(&self, group: &GroupId) -> Option<Placement> {
        self.leaders.read().get(group).cloned()
    }

    /// Stops this node's replicas of `topic`.
    async fn stop_replicas(&self, topic: &str) {
        let mut running = self.replicas.lock().await;
        let groups: Vec<GroupId> = running.keys().filter(|g| g.topic == topic).cloned().collect();
        for group in groups {
            self.groups.remove(&group);
            self.leaders.write().remove(&group);
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
        for (group, replica) in running.drain() {
            self.groups.remove(&group);
            let _ = replica.shutdown().await;
        }
        if let Some(metadata) = self.metadata.get() {
            self.groups.remove(&controller_group());
            let _ = metadata.shutdown().await;
            // Not a topic of the broker's, which closes those.
            if let Err(e) = metadata.replica.log.close() {
                log::warn!("node {}: closing the controller's log: {e}", self.me);
            }
        }
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
    /// round-robin over the registered nodes, `replication_factor` each (at most all nodes).
    pub(crate) fn assign(&self, first: u32, count: u32) -> Vec<Vec<NodeId>> {
        let nodes: Vec<NodeId> = self.state.lock().nodes.keys().copied().collect();
        let nodes = if nodes.is_empty() { vec![self.me] } else { nodes };
        let rf = self.replication_factor.clamp(1, nodes.len());
        (first..first + count)
            .map(|p| (0..rf).map(|i| nodes[(p as usize + i) % nodes.len()]).collect())
            .collect()
    }

    /// Runs `f` on the controller's runtime and waits for it here (the caller's thread is not
    /// one of the runtime's workers).
    fn wait<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().map_err(|_| cluster_error("the cluster has stopped"))?
    }
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(cluster_error)?
}

/// The broker's topic changes, decided by the controller.
#[derive(Debug)]
pub(crate) struct Coordinator(pub(crate) Arc<Controller>);

impl Coordinate for Coordinator {
    fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        let c = self.0.clone();
        let replicas = c.assign(0, partitions);
        let command = Command::CreateTopic {
            name: name.to_string(),
            partitions,
            config,
            replicas,
        };
        self.0.wait(async move { c.submit(command).await })
    }

    fn delete_topic(&self, name: &str) -> Result<()> {
        let c = self.0.clone();
        let command = Command::DeleteTopic {
            name: name.to_string(),
        };
        self.0.wait(async move { c.submit(command).await })
    }

    fn add_partitions(&self, name: &str, total: u32) -> Result<()> {
        let c = self.0.clone();
        let current = c.broker.partition_count(name)?;
        let replicas = c.assign(current, total - current);
        let command = Command::AddPartitions {
            name: name.to_string(),
            replicas,
        };
        self.0.wait(async move { c.submit(command).await })
    }

    fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()> {
        let c = self.0.clone();
        let command = Command::AlterTopicConfig {
            name: name.to_string(),
            config,
        };
        self.0.wait(async move { c.submit(command).await })
    }

    fn node_id(&self) -> u64 {
        self.0.me
    }

    fn kafka_nodes(&self) -> Vec<(u64, Option<String>)> {
        self.0
            .nodes()
            .into_iter()
            .map(|n| (n.id, n.kafka_address))
            .collect()
    }

    fn controller(&self) -> Option<u64> {
        self.0.placement(&controller_group()).and_then(|p| p.leader)
    }

    fn placement(&self, topic: &str, partition: u32) -> Option<Placement> {
        let group = GroupId {
            topic: topic.to_string(),
            partition: partition as i32,
        };
        self.0.placement(&group)
    }
}
