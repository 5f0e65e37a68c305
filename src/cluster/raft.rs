//! The one place that names openraft: the type configuration of every Raft group (the
//! partitions' and the controller's), and the aliases the rest of `cluster` uses. A bump of
//! the pinned openraft version touches this file first.
//!
//! Standard leader ids (one leader per term) make the term a Kafka leader epoch; node ids are
//! `u64`; nodes carry nothing (addresses are the controller's state, not membership's).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cluster::entry::{Payload, Records};

/// What a committed batch became in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Appended {
    /// The offset of its first record.
    pub(crate) base_offset: i64,
    /// The offset of its last record.
    pub(crate) last_offset: i64,
    /// Its largest timestamp (the log's clock, under `LogAppendTime`).
    pub(crate) max_timestamp: i64,
}

openraft::declare_raft_types!(
    /// The types of rivulet's Raft groups.
    pub(crate) TypeConfig:
        D = Records,
        R = Appended,
        NodeId = u64,
        Node = openraft::impls::EmptyNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        Vote = openraft::impls::Vote<openraft::impls::leader_id_std::LeaderId<u64, u64>>,
        Payload = Payload,
        Entry = openraft::Entry<openraft::vote::leader_id_std::CommittedLeaderId<u64>, Payload>,
);

pub(crate) type NodeId = u64;
pub(crate) type Node = openraft::impls::EmptyNode;
pub(crate) type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub(crate) type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub(crate) type Membership = openraft::Membership<NodeId, Node>;
pub(crate) type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type LogState = openraft::storage::LogState<TypeConfig>;
pub(crate) type IoFlushed = openraft::storage::IOFlushed<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot<D> = openraft::type_config::alias::SnapshotOf<TypeConfig, D>;

/// A log id from its term and index.
pub(crate) fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(openraft::vote::leader_id_std::CommittedLeaderId::new(term), index)
}

/// The term of a log id.
pub(crate) fn term_of(id: &LogId) -> u64 {
    id.leader_id.term
}

impl fmt::Display for Appended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offsets {}..={}", self.base_offset, self.last_offset)
    }
}
