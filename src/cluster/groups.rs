//! In-process group members at a node that does not coordinate the cluster's groups: their
//! requests (join, sync, heartbeat, leave, commit, committed offsets) go over the peer link
//! to the node that does (the leader of the offsets topic's partition), which runs them on
//! its own coordinator and offset store, as it runs Kafka clients' requests. The transaction
//! coordinator's calls travel the same way: markers for the committed offsets to the node
//! that coordinates groups, and a check that a transaction is open to the node that
//! coordinates transactions.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::TopicPartition;
use crate::broker::Broker;
use crate::cluster::partition::{cluster_error, run_on};
use crate::cluster::peer::{GroupId, Router};
use crate::cluster::raft::NodeId;
use crate::error::{Error, Result};
use crate::group::offsets::{validate_group_id, validate_metadata};
use crate::group::{
    JoinGroup, Joined, JoinedMember, MAX_TIMEOUT, MemberRef, OffsetAndMetadata, Pending, RemoteCoordinator,
};
use crate::storage::AppendInfo;
use crate::storage::producers::{Marker, ProducerError};
use crate::txn::TxnCalls;

/// A group request from a member at another node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum GroupCall {
    Join(Join),
    Sync {
        group: String,
        member: Member,
        assignments: Vec<(String, Vec<u8>)>,
    },
    Heartbeat {
        group: String,
        member: Member,
    },
    Leave {
        group: String,
        member_id: String,
    },
    Commit {
        group: String,
        member: Member,
        offsets: Vec<(String, u32, Committed)>,
    },
    Committed {
        group: String,
        partitions: Vec<(String, u32)>,
    },
    /// A member id for a new member to join with.
    Reserve(Join),
    /// Ends a producer's transaction in the committed offsets (from the transaction
    /// coordinator).
    CompleteTransaction {
        producer_id: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    },
    /// Offsets written in a producer's transaction (`BrokerInner::commit_in_transaction`).
    CommitInTransaction {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        group: String,
        member: Option<Member>,
        offsets: Vec<(String, u32, Committed)>,
    },
    /// A call of the transaction coordinator, for the node that coordinates transactions
    /// (which need not coordinate groups).
    Txn(TxnCall),
    /// Whether a transaction's commit of the group's offsets is pending.
    HasPending {
        group: String,
        partitions: Vec<(String, u32)>,
    },
}

/// A producer's call of the transaction coordinator (`TxnCalls`), or a node's check that a
/// transaction it takes records or offsets for is open.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum TxnCall {
    InitProducerId {
        transactional_id: String,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    },
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, u32)>,
    },
    AddOffsets {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        group: String,
    },
    End {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    },
    CheckOpen {
        transactional_id: Option<String>,
        producer_id: i64,
        epoch: i16,
        topic: String,
        partition: u32,
    },
}

/// A JoinGroup ([`JoinGroup`]) for `group`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Join {
    group: String,
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Vec<u8>)>,
}

impl Join {
    fn of(group: &str, request: JoinGroup) -> Join {
        Join {
            group: group.to_string(),
            member_id: request.member_id,
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
        }
    }

    /// The group and the request.
    fn request(self) -> (String, JoinGroup) {
        let request = JoinGroup {
            member_id: self.member_id,
            group_instance_id: self.group_instance_id,
            client_id: self.client_id,
            session_timeout: self.session_timeout,
            rebalance_timeout: self.rebalance_timeout,
            protocol_type: self.protocol_type,
            protocols: self.protocols,
            notify: None,
        };
        (self.group, request)
    }
}

/// A member as a request names it ([`MemberRef`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    generation: i32,
}

/// A committed offset ([`OffsetAndMetadata`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Committed {
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    commit_timestamp: i64,
}

/// The coordinator's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum GroupAnswer {
    Joined {
        generation: i32,
        protocol: String,
        leader: String,
        member_id: String,
        /// For the leader: each member's id, static id and metadata.
        members: Vec<(String, Option<String>, Vec<u8>)>,
    },
    Synced(Vec<u8>),
    Done,
    Committed(Vec<Option<Committed>>),
    Reserved(String),
    /// A transactional producer's id and epoch.
    ProducerId {
        producer_id: i64,
        epoch: i16,
    },
    /// Whether a transaction's commit of offsets is pending.
    Pending(bool),
}

/// Why the coordinator refused: the group errors a member acts on, kept as they are.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum GroupRefusal {
    UnknownMember {
        member: String,
    },
    IllegalGeneration {
        generation: i32,
        current: i32,
    },
    RebalanceInProgress,
    FencedInstanceId {
        instance: String,
    },
    InconsistentGroupProtocol {
        reason: String,
    },
    /// The node asked does not coordinate groups (any more).
    NotCoordinator,
    Other(String),
    /// A commit named a topic or partition the coordinator does not know (nodes apply topic
    /// changes each in its own time).
    UnknownTopic {
        topic: String,
    },
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    /// The transaction coordinator's refusals.
    ProducerFenced {
        transactional_id: String,
        epoch: i16,
        current: i16,
    },
    InvalidTxnState {
        transactional_id: String,
        reason: String,
    },
    InvalidProducerIdMapping {
        transactional_id: String,
        producer_id: i64,
    },
    /// The node asked does not coordinate transactions (any more).
    NotTxnCoordinator {
        reason: String,
    },
    ConcurrentTransactions {
        transactional_id: String,
    },
    InvalidTransactionTimeout {
        timeout_ms: i64,
        max_ms: i64,
    },
    /// A partition's producer state refused a batch (a fenced producer's offsets).
    Producer {
        producer_id: i64,
        error: ProducerError,
    },
    OffsetMetadataTooLarge {
        topic: String,
        partition: u32,
        len: usize,
        max: usize,
    },
}

impl From<&MemberRef> for Member {
    fn from(m: &MemberRef) -> Member {
        Member {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            generation: m.generation,
        }
    }
}

impl From<Member> for MemberRef {
    fn from(m: Member) -> MemberRef {
        MemberRef {
            member_id: m.member_id,
            group_instance_id: m.group_instance_id,
            generation: m.generation,
        }
    }
}

impl From<&OffsetAndMetadata> for Committed {
    fn from(o: &OffsetAndMetadata) -> Committed {
        Committed {
            offset: o.offset,
            leader_epoch: o.leader_epoch,
            metadata: o.metadata.clone(),
            commit_timestamp: o.commit_timestamp,
        }
    }
}

impl From<Committed> for OffsetAndMetadata {
    fn from(c: Committed) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset: c.offset,
            leader_epoch: c.leader_epoch,
            metadata: c.metadata,
            commit_timestamp: c.commit_timestamp,
        }
    }
}

impl GroupRefusal {
    fn of(e: Error) -> GroupRefusal {
        match e {
            Error::UnknownMember { member, .. } => GroupRefusal::UnknownMember { member },
            Error::IllegalGeneration {
                generation, current, ..
            } => GroupRefusal::IllegalGeneration { generation, current },
            Error::RebalanceInProgress { .. } => GroupRefusal::RebalanceInProgress,
            Error::FencedInstanceId { instance, .. } => GroupRefusal::FencedInstanceId { instance },
            Error::InconsistentGroupProtocol { reason, .. } => {
                GroupRefusal::InconsistentGroupProtocol { reason }
            }
            Error::CoordinatorNotAvailable { .. } => GroupRefusal::NotCoordinator,
            Error::UnknownTopic { topic } => GroupRefusal::UnknownTopic { topic },
            Error::UnknownPartition {
                topic,
                partition,
                partitions,
            } => GroupRefusal::UnknownPartition {
                topic,
                partition,
                partitions,
            },
            Error::ProducerFenced {
                transactional_id,
                epoch,
                current,
            } => GroupRefusal::ProducerFenced {
                transactional_id,
                epoch,
                current,
            },
            Error::InvalidTxnState {
                transactional_id,
                reason,
            } => GroupRefusal::InvalidTxnState {
                transactional_id,
                reason,
            },
            Error::InvalidProducerIdMapping {
                transactional_id,
                producer_id,
            } => GroupRefusal::InvalidProducerIdMapping {
                transactional_id,
                producer_id,
            },
            Error::NotCoordinator { reason } => GroupRefusal::NotTxnCoordinator { reason },
            Error::ConcurrentTransactions { transactional_id } => {
                GroupRefusal::ConcurrentTransactions { transactional_id }
            }
            Error::InvalidTransactionTimeout { timeout_ms, max_ms } => {
                GroupRefusal::InvalidTransactionTimeout { timeout_ms, max_ms }
            }
            Error::Producer { producer_id, error } => GroupRefusal::Producer { producer_id, error },
            Error::OffsetMetadataTooLarge {
                topic,
                partition,
                len,
                max,
            } => GroupRefusal::OffsetMetadataTooLarge {
                topic,
                partition,
                len,
                max,
            },
            e => GroupRefusal::Other(e.to_string()),
        }
    }

    fn into_error(self, group: &str) -> Error {
        let group = group.to_string();
        match self {
            GroupRefusal::UnknownMember { member } => Error::UnknownMember { group, member },
            GroupRefusal::IllegalGeneration { generation, current } => Error::IllegalGeneration {
                group,
                generation,
                current,
            },
            GroupRefusal::RebalanceInProgress => Error::RebalanceInProgress { group },
            GroupRefusal::FencedInstanceId { instance } => Error::FencedInstanceId { group, instance },
            GroupRefusal::InconsistentGroupProtocol { reason } => {
                Error::InconsistentGroupProtocol { group, reason }
            }
            GroupRefusal::NotCoordinator => Error::CoordinatorNotAvailable { group },
            GroupRefusal::UnknownTopic { topic } => Error::UnknownTopic { topic },
            GroupRefusal::UnknownPartition {
                topic,
                partition,
                partitions,
            } => Error::UnknownPartition {
                topic,
                partition,
                partitions,
            },
            GroupRefusal::ProducerFenced {
                transactional_id,
                epoch,
                current,
            } => Error::ProducerFenced {
                transactional_id,
                epoch,
                current,
            },
            GroupRefusal::InvalidTxnState {
                transactional_id,
                reason,
            } => Error::InvalidTxnState {
                transactional_id,
                reason,
            },
            GroupRefusal::InvalidProducerIdMapping {
                transactional_id,
                producer_id,
            } => Error::InvalidProducerIdMapping {
                transactional_id,
                producer_id,
            },
            GroupRefusal::NotTxnCoordinator { reason } => Error::NotCoordinator { reason },
            GroupRefusal::ConcurrentTransactions { transactional_id } => {
                Error::ConcurrentTransactions { transactional_id }
            }
            GroupRefusal::InvalidTransactionTimeout { timeout_ms, max_ms } => {
                Error::InvalidTransactionTimeout { timeout_ms, max_ms }
            }
            GroupRefusal::Producer { producer_id, error } => Error::Producer { producer_id, error },
            GroupRefusal::OffsetMetadataTooLarge {
                topic,
                partition,
                len,
                max,
            } => Error::OffsetMetadataTooLarge {
                topic,
                partition,
                len,
                max,
            },
            GroupRefusal::Other(why) => cluster_error(format!("group {group:?} at its coordinator: {why}")),
        }
    }
}

/// How long a request that waits for nothing but the coordinator (and, for a commit, the
/// offsets topic's replication) may take.
const CALL_TTL: Duration = Duration::from_secs(15);

/// How long the end of a transaction may take at its coordinator (its markers written).
const END_TTL: Duration = Duration::from_secs(120);

/// How long a JoinGroup or SyncGroup may wait at the coordinator: a rebalance waits for the
/// group's longest rebalance timeout, at most [`MAX_TIMEOUT`]. (A member stops waiting
/// sooner if another node coordinates groups meanwhile.)
const REBALANCE_TTL: Duration = Duration::from_secs(MAX_TIMEOUT.as_secs() + 30);

/// How often a coordinator waiting to answer a join or sync expires what is due in the
/// group (no member at this node ticks it).
const TICK: Duration = Duration::from_millis(100);

/// The group coordinator at node `target`, as this node's members reach it.
pub(crate) struct RemoteGroups {
    pub(crate) target: NodeId,
    pub(crate) router: Router,
    pub(crate) runtime: Handle,
}

/// The group id the calls travel under (they belong to no Raft group).
fn no_group() -> GroupId {
    GroupId {
        topic: String::new(),
        partition: -1,
        incarnation: 0,
    }
}

impl RemoteGroups {
    /// Sends `call` and waits for its answer (off the runtime: for the consumer's thread).
    fn call(&self, group: &str, call: GroupCall, ttl: Duration) -> Result<GroupAnswer> {
        let (router, target) = (self.router.clone(), self.target);
        let answer = run_on(&self.runtime, async move {
            Ok(router.group_call(target, no_group(), call, ttl).await)
        })?;
        answer_of(group, answer)
    }

    /// Sends `call`, which is answered `Done` when it succeeds.
    fn done(&self, group: &str, call: GroupCall) -> Result<()> {
        match self.call(group, call, CALL_TTL)? {
            GroupAnswer::Done => Ok(()),
            other => Err(unexpected(group, other)),
        }
    }

    /// Sends `call` and answers `pending` when it is answered.
    fn later<T: Send + 'static>(
        &self,
        group: &str,
        call: GroupCall,
        ttl: Duration,
        answer: impl FnOnce(GroupAnswer) -> Result<T> + Send + 'static,
    ) -> Pending<Result<T>> {
        let (tx, rx) = crate::group::reply_pair();
        let (router, target, group) = (self.router.clone(), self.target, group.to_string());
        self.runtime.spawn(async move {
            let answered = router.group_call(target, no_group(), call, ttl).await;
            tx.send(answer_of(&group, answered).and_then(answer));
        });
        rx
    }
}

/// The coordinator's answer as the coordinator's own calls return it: a link that failed is
/// a coordinator not available (the member asks again, wherever the coordinator is by then).
fn answer_of(
    group: &str,
    answered: std::result::Result<std::result::Result<GroupAnswer, GroupRefusal>, String>,
) -> Result<GroupAnswer> {
    match answered {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(refusal)) => Err(refusal.into_error(group)),
        Err(why) => {
            log::debug!("group {group:?}: the coordinator did not answer: {why}");
            Err(Error::CoordinatorNotAvailable {
                group: group.to_string(),
            })
        }
    }
}

fn unexpected(group: &str, answer: GroupAnswer) -> Error {
    cluster_error(format!("group {group:?}: an unexpected answer {answer:?}"))
}

impl RemoteCoordinator for RemoteGroups {
    fn node(&self) -> u64 {
        self.target
    }

    fn reserve_member_id(&self, group: &str, request: &JoinGroup) -> Result<String> {
        let request = JoinGroup {
            notify: None,
            ..request.clone()
        };
        match self.call(group, GroupCall::Reserve(Join::of(group, request)), CALL_TTL)? {
            GroupAnswer::Reserved(id) => Ok(id),
            other => Err(unexpected(group, other)),
        }
    }

    fn join_group(&self, group: &str, request: JoinGroup) -> Pending<Result<Joined>> {
        let call = GroupCall::Join(Join::of(group, request));
        let name = group.to_string();
        self.later(group, call, REBALANCE_TTL, move |answer| match answer {
            GroupAnswer::Joined {
                generation,
                protocol,
                leader,
                member_id,
                members,
            } => Ok(Joined {
                generation,
                protocol,
                leader,
                member_id,
                members: members
                    .into_iter()
                    .map(|(member_id, group_instance_id, metadata)| JoinedMember {
                        member_id,
                        group_instance_id,
                        metadata,
                    })
                    .collect(),
            }),
            other => Err(unexpected(&name, other)),
        })
    }

    fn sync_group(
        &self,
        group: &str,
        member: &MemberRef,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Pending<Result<Vec<u8>>> {
        let call = GroupCall::Sync {
            group: group.to_string(),
            member: member.into(),
            assignments,
        };
        let name = group.to_string();
        self.later(group, call, REBALANCE_TTL, move |answer| match answer {
            GroupAnswer::Synced(bytes) => Ok(bytes),
            other => Err(unexpected(&name, other)),
        })
    }

    fn heartbeat(&self, group: &str, member: &MemberRef) -> Result<()> {
        let call = GroupCall::Heartbeat {
            group: group.to_string(),
            member: member.into(),
        };
        self.done(group, call)
    }

    fn leave_group(&self, group: &str, member_id: &str) -> Result<()> {
        let call = GroupCall::Leave {
            group: group.to_string(),
            member_id: member_id.to_string(),
        };
        self.done(group, call)
    }

    fn commit(
        &self,
        group: &str,
        member: &MemberRef,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<()> {
        let call = GroupCall::Commit {
            group: group.to_string(),
            member: member.into(),
            offsets: offsets
                .iter()
                .map(|(tp, o)| (tp.topic.clone(), tp.partition, o.into()))
                .collect(),
        };
        self.done(group, call)
    }

    fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<OffsetAndMetadata>>> {
        let call = GroupCall::Committed {
            group: group.to_string(),
            partitions: partitions
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect(),
        };
        match self.call(group, call, CALL_TTL)? {
            GroupAnswer::Committed(found) if found.len() == partitions.len() => Ok(found
                .into_iter()
                .map(|c| c.map(OffsetAndMetadata::from))
                .collect()),
            other => Err(unexpected(group, other)),
        }
    }

    fn commit_in_transaction(
        &self,
        id: &str,
        (producer_id, epoch): (i64, i16),
        group: &str,
        member: Option<&MemberRef>,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        let call = GroupCall::CommitInTransaction {
            transactional_id: id.to_string(),
            producer_id,
            epoch,
            group: group.to_string(),
            member: member.map(Member::from),
            offsets: offsets
                .iter()
                .map(|(tp, o)| (tp.topic.clone(), tp.partition, Committed::from(o)))
                .collect(),
        };
        self.done(group, call)
    }

    fn has_pending(&self, group: &str, partitions: &[TopicPartition]) -> Result<bool> {
        let call = GroupCall::HasPending {
            group: group.to_string(),
            partitions: partitions
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect(),
        };
        match self.call(group, call, CALL_TTL)? {
            GroupAnswer::Pending(pending) => Ok(pending),
            other => Err(unexpected(group, other)),
        }
    }

    fn complete_transaction(&self, producer_id: i64, epoch: i16, marker: Marker) -> Result<()> {
        let call = GroupCall::CompleteTransaction {
            producer_id,
            epoch,
            commit: marker.commit,
            coordinator_epoch: marker.coordinator_epoch,
        };
        self.done("", call)
    }
}

impl RemoteGroups {
    /// Sends a call to the transaction coordinator at this node: a link that failed, or a
    /// node that no longer coordinates, is `NotCoordinator` (the caller asks again, wherever
    /// the coordinator is by then).
    fn txn(&self, call: TxnCall) -> Result<GroupAnswer> {
        // An end writes every partition's marker before it answers: it has longer, and one
        // not answered may have happened.
        let ttl = match call {
            TxnCall::End { .. } => END_TTL,
            _ => CALL_TTL,
        };
        self.txn_within(call, ttl)
    }

    /// [`txn`](Self::txn), waiting at most `ttl`.
    fn txn_within(&self, call: TxnCall, ttl: Duration) -> Result<GroupAnswer> {
        let end = matches!(call, TxnCall::End { .. });
        match self.call("", GroupCall::Txn(call), ttl) {
            Err(Error::CoordinatorNotAvailable { .. }) if end => Err(cluster_error(format!(
                "node {} did not answer the end of the transaction: its outcome is unknown",
                self.target
            ))),
            Err(Error::CoordinatorNotAvailable { .. }) => Err(Error::NotCoordinator {
                reason: format!("node {} did not answer", self.target),
            }),
            answer => answer,
        }
    }

    /// Sends a transaction coordinator's call answered `Done` when it succeeds.
    fn txn_done(&self, call: TxnCall) -> Result<()> {
        match self.txn(call)? {
            GroupAnswer::Done => Ok(()),
            other => Err(unexpected("", other)),
        }
    }

    /// Asks the transaction coordinator at this node whether producer `producer_id`'s
    /// transaction in `epoch` is open with `tp` in it (see `TxnCoordinator::check_open`).
    pub(crate) fn check_transaction(
        &self,
        transactional_id: Option<&str>,
        (producer_id, epoch): (i64, i16),
        tp: &TopicPartition,
        within: Duration,
    ) -> Result<()> {
        let call = TxnCall::CheckOpen {
            transactional_id: transactional_id.map(str::to_string),
            producer_id,
            epoch,
            topic: tp.topic.clone(),
            partition: tp.partition,
        };
        match self.txn_within(call, within)? {
            GroupAnswer::Done => Ok(()),
            other => Err(unexpected("", other)),
        }
    }
}

impl TxnCalls for RemoteGroups {
    fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        let call = TxnCall::InitProducerId {
            transactional_id: id.to_string(),
            timeout_ms,
            expected,
        };
        match self.txn(call)? {
            GroupAnswer::ProducerId { producer_id, epoch } => Ok((producer_id, epoch)),
            other => Err(unexpected("", other)),
        }
    }

    fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        self.txn_done(TxnCall::AddPartitions {
            transactional_id: id.to_string(),
            producer_id,
            epoch,
            partitions: partitions
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect(),
        })
    }

    fn add_offsets(&self, id: &str, producer_id: i64, epoch: i16, group: &str) -> Result<()> {
        self.txn_done(TxnCall::AddOffsets {
            transactional_id: id.to_string(),
            producer_id,
            epoch,
            group: group.to_string(),
        })
    }

    fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<()> {
        self.txn_done(TxnCall::End {
            transactional_id: id.to_string(),
            producer_id,
            epoch,
            commit,
        })
    }

    fn write_in(
        &self,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
        write: &mut dyn FnMut() -> Result<AppendInfo>,
    ) -> Result<AppendInfo> {
        self.check_transaction(None, (producer_id, epoch), tp, crate::txn::CHECK_TTL)?;
        write()
    }
}

/// Runs a member's `call` on this node's coordinator, if this node coordinates the
/// cluster's groups (`coordinates` says so, asked again while a rebalance is awaited). Every
/// step that takes a group's lock runs on the blocking pool: a commit holds the lock while
/// the offsets topic replicates it, which needs the runtime's workers.
pub(crate) async fn serve(
    broker: Broker,
    coordinates: impl Fn() -> bool,
    call: GroupCall,
) -> std::result::Result<GroupAnswer, GroupRefusal> {
    if let GroupCall::Txn(call) = call {
        // For the node that coordinates transactions, which need not coordinate groups.
        return off_workers(move || answer_txn(&broker, call)).await;
    }
    if !coordinates() {
        return Err(GroupRefusal::NotCoordinator);
    }
    match call {
        GroupCall::Join(join) => {
            let (group, request) = join.request();
            let (b, g) = (broker.clone(), group.clone());
            let pending = off_workers(move || Ok(b.inner.groups.join_group(&g, request))).await?;
            let joined = ticking(&broker, &group, pending, &coordinates).await?;
            Ok(GroupAnswer::Joined {
                generation: joined.generation,
                protocol: joined.protocol,
                leader: joined.leader,
                member_id: joined.member_id,
                members: joined
                    .members
                    .into_iter()
                    .map(|m| (m.member_id, m.group_instance_id, m.metadata))
                    .collect(),
            })
        }
        GroupCall::Sync {
            group,
            member,
            assignments,
        } => {
            let (b, g) = (broker.clone(), group.clone());
            let pending =
                off_workers(move || Ok(b.inner.groups.sync_group(&g, &member.into(), assignments))).await?;
            let synced = ticking(&broker, &group, pending, &coordinates).await?;
            Ok(GroupAnswer::Synced(synced))
        }
        call => off_workers(move || answer(&broker, call)).await,
    }
}

/// Awaits `pending` from `group`, expiring what falls due in the group meanwhile; refused
/// once this node no longer coordinates groups (the member asks the node that does).
async fn ticking<T>(
    broker: &Broker,
    group: &str,
    mut pending: Pending<Result<T>>,
    coordinates: &impl Fn() -> bool,
) -> std::result::Result<T, GroupRefusal> {
    loop {
        tokio::select! {
            answer = &mut pending => return answer.map_err(GroupRefusal::of),
            _ = tokio::time::sleep(TICK) => {
                if !coordinates() {
                    return Err(GroupRefusal::NotCoordinator);
                }
                let (b, g) = (broker.clone(), group.to_string());
                off_workers(move || {
                    b.inner.groups.tick_group(&g);
                    Ok(())
                })
                .await?;
            }
        }
    }
}

/// Runs `f` on the blocking pool.
async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, GroupRefusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(answer) => answer.map_err(GroupRefusal::of),
        Err(e) => Err(GroupRefusal::Other(e.to_string())),
    }
}

/// Answers the calls that wait for nothing but locks and the offsets topic (on the blocking
/// pool). A commit is checked as one made here would be.
fn answer(broker: &Broker, call: GroupCall) -> Result<GroupAnswer> {
    let groups = &broker.inner.groups;
    match call {
        GroupCall::Reserve(join) => {
            let (group, request) = join.request();
            Ok(GroupAnswer::Reserved(groups.reserve_member_id(&group, &request)?))
        }
        GroupCall::Heartbeat { group, member } => {
            groups.heartbeat(&group, &member.into())?;
            Ok(GroupAnswer::Done)
        }
        GroupCall::Leave { group, member_id } => {
            groups.leave_group(&group, &member_id, None)?;
            Ok(GroupAnswer::Done)
        }
        GroupCall::Commit {
            group,
            member,
            offsets,
        } => {
            validate_group_id(&group)?;
            let entries: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
                .into_iter()
                .map(|(topic, partition, c)| (TopicPartition::new(topic, partition), c.into()))
                .collect();
            for (tp, o) in &entries {
                broker.partition(&tp.topic, tp.partition)?;
                if o.offset < 0 {
                    return Err(Error::InvalidArgument {
                        name: "offset",
                        value: o.offset.to_string(),
                        reason: "it must not be negative",
                    });
                }
                validate_metadata(tp, &o.metadata)?;
            }
            let store = broker.inner.offsets()?;
            groups
                .check_commit(&group, &member.into(), || store.append(&group, &entries))?
                .durable()?;
            Ok(GroupAnswer::Done)
        }
        GroupCall::Committed { group, partitions } => {
            let store = broker.inner.offsets()?;
            let found = partitions
                .into_iter()
                .map(|(topic, p)| {
                    store
                        .committed(&group, &TopicPartition::new(topic, p))
                        .as_ref()
                        .map(Committed::from)
                })
                .collect();
            Ok(GroupAnswer::Committed(found))
        }
        GroupCall::CompleteTransaction {
            producer_id,
            epoch,
            commit,
            coordinator_epoch,
        } => {
            let marker = Marker {
                commit,
                coordinator_epoch,
            };
            broker
                .inner
                .offsets()?
                .complete_transaction(producer_id, epoch, marker)?;
            Ok(GroupAnswer::Done)
        }
        GroupCall::CommitInTransaction {
            transactional_id,
            producer_id,
            epoch,
            group,
            member,
            offsets,
        } => {
            let entries: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
                .into_iter()
                .map(|(topic, partition, c)| (TopicPartition::new(topic, partition), c.into()))
                .collect();
            let member = member.map(MemberRef::from);
            broker.inner.commit_in_transaction_here(
                &transactional_id,
                (producer_id, epoch),
                &group,
                member.as_ref(),
                &entries,
            )?;
            Ok(GroupAnswer::Done)
        }
        GroupCall::HasPending { group, partitions } => {
            let partitions: Vec<TopicPartition> = partitions
                .into_iter()
                .map(|(topic, p)| TopicPartition::new(topic, p))
                .collect();
            let pending = broker.inner.offsets()?.has_pending(&group, &partitions);
            Ok(GroupAnswer::Pending(pending))
        }
        GroupCall::Join(_) | GroupCall::Sync { .. } | GroupCall::Txn(_) => {
            Err(cluster_error("a join or sync is awaited, not answered"))
        }
    }
}

/// Answers a transaction coordinator's call with this node's coordinator (on the blocking
/// pool).
fn answer_txn(broker: &Broker, call: TxnCall) -> Result<GroupAnswer> {
    let c = broker.inner.transactions()?;
    match call {
        TxnCall::InitProducerId {
            transactional_id,
            timeout_ms,
            expected,
        } => {
            let (producer_id, epoch) = c.init_producer_id(&transactional_id, timeout_ms, expected)?;
            return Ok(GroupAnswer::ProducerId { producer_id, epoch });
        }
        TxnCall::AddPartitions {
            transactional_id,
            producer_id,
            epoch,
            partitions,
        } => {
            let partitions: Vec<TopicPartition> = partitions
                .into_iter()
                .map(|(topic, p)| TopicPartition::new(topic, p))
                .collect();
            c.add_partitions(&transactional_id, producer_id, epoch, &partitions)?;
        }
        TxnCall::AddOffsets {
            transactional_id,
            producer_id,
            epoch,
            group,
        } => c.add_offsets(&transactional_id, producer_id, epoch, &group)?,
        TxnCall::End {
            transactional_id,
            producer_id,
            epoch,
            commit,
        } => c.end(&transactional_id, producer_id, epoch, commit)?,
        TxnCall::CheckOpen {
            transactional_id,
            producer_id,
            epoch,
            topic,
            partition,
        } => {
            let tp = TopicPartition::new(topic, partition);
            c.check_open(transactional_id.as_deref(), producer_id, epoch, &tp)?;
        }
    }
    Ok(GroupAnswer::Done)
}

/// The remote coordinator of a cluster whose groups node `leader` coordinates.
pub(crate) fn at(leader: NodeId, router: Router, runtime: Handle) -> Arc<dyn RemoteCoordinator> {
    Arc::new(RemoteGroups {
        target: leader,
        router,
        runtime,
    })
}
