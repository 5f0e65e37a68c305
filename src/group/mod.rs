//! Consumer groups: the coordinator state machine (Kafka's classic group protocol), the
//! consumer protocol it carries, the partition assignors (pure functions) and the
//! committed-offset store.
mod assignor;
mod coordinator;
pub(crate) mod offsets;
mod protocol;
mod reply;
mod wire;

pub use assignor::{Assignment, Assignor, Member};
pub use coordinator::{
    GroupCoordinator, GroupDescription, GroupState, JoinGroup, Joined, JoinedMember, MAX_TIMEOUT,
    MemberDescription, MemberRef,
};
pub use offsets::{MAX_GROUP_ID_BYTES, MAX_OFFSET_METADATA_BYTES, OFFSETS_TOPIC, OffsetAndMetadata};
pub use protocol::{CONSUMER_PROTOCOL_TYPE, MemberAssignment, StickyUserData, Subscription};
pub use reply::Pending;
