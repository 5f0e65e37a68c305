//! Consumer groups: the partition assignors (pure functions) and the committed-offset store.
//! The coordinator state machine builds on them.
mod assignor;
pub(crate) mod offsets;

pub use assignor::{Assignment, Assignor, Member};
pub use offsets::{OFFSETS_TOPIC, OffsetAndMetadata};
