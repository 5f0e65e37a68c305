//! Replication of partitions between embedded instances (feature `cluster`).
//!
//! Each partition is a Raft group (openraft) whose Raft log is the partition's own segment
//! log: one entry per batch, the term stamped into the batch's partition leader epoch.
//! This module holds the parts each replica is built of:
//!
//! - `raft`: the one place that names openraft's types;
//! - `entry`: entries as Kafka batches (control batches for openraft's own entries);
//! - `log_store`: the log as openraft's log storage, with its entry index and I/O thread;
//! - `state_machine`: commit moves the high watermark; metadata-only snapshots;
//! - `peer`: the peer link, one connection per pair of nodes shared by all groups;
//! - `partition`: one running replica of a partition.

// The replica's parts are used by their tests until the cluster that runs them lands.
#![cfg_attr(not(test), allow(dead_code))]

mod entry;
mod log_store;
mod partition;
mod peer;
mod raft;
mod state_machine;

#[cfg(test)]
mod tests;
