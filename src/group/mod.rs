//! Consumer groups: the coordinator state machine (Kafka's classic group protocol), the
//! consumer protocol it carries, the partition assignors (pure functions) and the
//! committed-offset store.
mod assignor;
mod coordinator;
pub(crate) mod offsets;
mod protocol;
mod reply;
pub(crate) mod wire;

pub use assignor::{Assignment, Assignor, Member};
pub use coordinator::{
    GroupCoordinator, GroupDescription, GroupState, JoinGroup, Joined, JoinedMember, MAX_TIMEOUT,
    MemberDescription, MemberRef,
};
pub use offsets::{MAX_GROUP_ID_BYTES, MAX_OFFSET_METADATA_BYTES, OFFSETS_TOPIC, OffsetAndMetadata};
pub use protocol::{CONSUMER_PROTOCOL_TYPE, MemberAssignment, StickyUserData, Subscription};
pub use reply::Pending;
#[cfg(feature = "cluster")]
pub(crate) use reply::reply as reply_pair;

/// The group coordinator of a cluster at another node, to which this node's in-process
/// members send their requests (over the peer link). The calls answer as the coordinator's
/// own do; [`Error::CoordinatorNotAvailable`](crate::Error::CoordinatorNotAvailable) when no
/// node coordinates groups now.
pub(crate) trait RemoteCoordinator: Send + Sync {
    /// The node that coordinates.
    fn node(&self) -> u64;
    /// A member id for a new member to join with ([`GroupCoordinator::reserve_member_id`]).
    fn reserve_member_id(&self, group: &str, request: &JoinGroup) -> crate::Result<String>;
    fn join_group(&self, group: &str, request: JoinGroup) -> Pending<crate::Result<Joined>>;
    fn sync_group(
        &self,
        group: &str,
        member: &MemberRef,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Pending<crate::Result<Vec<u8>>>;
    fn heartbeat(&self, group: &str, member: &MemberRef) -> crate::Result<()>;
    fn leave_group(&self, group: &str, member_id: &str) -> crate::Result<()>;
    /// Commits `offsets` for `member` of `group`, as [`GroupCoordinator::check_commit`] and
    /// the offset store do; returns once they are durable.
    fn commit(
        &self,
        group: &str,
        member: &MemberRef,
        offsets: Vec<(crate::TopicPartition, OffsetAndMetadata)>,
    ) -> crate::Result<()>;
    fn committed(
        &self,
        group: &str,
        partitions: &[crate::TopicPartition],
    ) -> crate::Result<Vec<Option<OffsetAndMetadata>>>;
    /// Writes `offsets` in a producer's transaction, as
    /// `BrokerInner::commit_in_transaction` does at the coordinator.
    fn commit_in_transaction(
        &self,
        id: &str,
        producer: (i64, i16),
        group: &str,
        member: Option<&MemberRef>,
        offsets: &[(crate::TopicPartition, OffsetAndMetadata)],
    ) -> crate::Result<()>;
    /// Whether a transaction's commit of `group`'s offsets for one of `partitions` (any, if
    /// none are named) is pending.
    fn has_pending(&self, group: &str, partitions: &[crate::TopicPartition]) -> crate::Result<bool>;
    /// Ends producer `producer_id`'s transaction in the committed offsets with `marker`
    /// (for the transaction coordinator).
    fn complete_transaction(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: crate::storage::producers::Marker,
    ) -> crate::Result<()>;
}
