//! Consumer groups. For now, the partition assignors (pure functions); the coordinator state
//! machine and the committed-offset store build on them.
mod assignor;

pub use assignor::{Assignment, Assignor, Member};
