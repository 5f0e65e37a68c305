//! Raft entries as Kafka batches: the partition's log is its Raft log, one entry per batch.
//!
//! - A normal entry is a batch of records, stored as the leader received it (its offsets
//!   assigned where it lands).
//! - openraft's blank entry, which a new leader commits first, is a control batch of type
//!   LEADER_CHANGE (2), as KRaft writes one.
//! - A membership entry is a control batch of a type of rivulet's own
//!   ([`MEMBERSHIP_CONTROL_TYPE`]) whose value is the membership.
//!
//! Each takes one offset; every reader of records skips control batches. The term is the
//! batch's partition leader epoch; the index is the batch's place in the log (see
//! `log_store`).
//!
//! A leader builds its entries' batches when it appends them (base offset -1 until the log
//! assigns one); every replica stores the bytes it read from its leader's log, so the replicas
//! of a partition hold identical batches.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::cluster::raft::{LogId, Membership, Node, NodeId, log_id};
use crate::storage::format::{Batch, be_i16};
use crate::storage::{BatchBuilder, Compression, RecordBatch};

/// Kafka's control record type of a leader change.
pub(crate) const LEADER_CHANGE_CONTROL_TYPE: i16 = 2;

/// The control record type of a membership entry: rivulet's own, far from Kafka's (0 to 6).
pub(crate) const MEMBERSHIP_CONTROL_TYPE: i16 = 0x5256;

/// Kafka's "no timestamp".
const NO_TIMESTAMP: i64 = -1;

/// The base offset a leader's new batch carries until its log assigns one.
pub(crate) const UNASSIGNED: i64 = -1;

/// The bytes of one RecordBatch v2.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Records(pub(crate) Vec<u8>);

/// An entry's payload, with the batch it is stored as once a log holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Payload {
    /// A new leader's first entry.
    Blank(Option<Records>),
    /// A batch of records.
    Normal(Records),
    /// A membership change.
    Membership(Membership, Option<Records>),
}

impl openraft::entry::RaftPayload for Payload {
    type D = Records;
    type NodeId = NodeId;
    type Node = Node;

    fn blank() -> Self {
        Payload::Blank(None)
    }

    fn with_normal(self, data: Records) -> Self {
        Payload::Normal(data)
    }

    fn with_membership(self, membership: Membership) -> Self {
        Payload::Membership(membership, None)
    }

    fn get_membership(&self) -> Option<Membership> {
        match self {
            Payload::Membership(m, _) => Some(m.clone()),
            _ => None,
        }
    }
}

/// The batch that stores an entry: the stored bytes it was read with (moved, not copied), or
/// a new batch with base offset [`UNASSIGNED`]. Its partition leader epoch is the entry's term.
pub(crate) fn to_batch(id: &LogId, payload: Payload) -> io::Result<RecordBatch> {
    let term = crate::cluster::raft::term_of(id);
    let epoch = i32::try_from(term)
        .map_err(|_| io::Error::other(format!("term {term} does not fit a Kafka leader epoch")))?;
    let (kind, value) = match payload {
        Payload::Normal(Records(bytes))
        | Payload::Blank(Some(Records(bytes)))
        | Payload::Membership(_, Some(Records(bytes))) => {
            let mut batch = RecordBatch::from_stored(bytes).map_err(invalid)?;
            batch.set_partition_leader_epoch(epoch);
            return Ok(batch);
        }
        Payload::Membership(m, None) => (MEMBERSHIP_CONTROL_TYPE, encode_membership(&m)),
        Payload::Blank(None) => (LEADER_CHANGE_CONTROL_TYPE, leader_change(epoch)),
    };
    let mut b = BatchBuilder::new(Compression::None).control(true);
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&kind.to_be_bytes());
    // A membership batch has no timestamp: replicas that each start a new group with the same
    // members write the same bytes.
    let timestamp = match kind {
        MEMBERSHIP_CONTROL_TYPE => NO_TIMESTAMP,
        _ => crate::storage::now_ms(),
    };
    b.push(timestamp, Some(&key), Some(&value), &[]);
    let mut batch = b.finish().map_err(invalid)?;
    batch.set_base_offset(UNASSIGNED);
    batch.set_partition_leader_epoch(epoch);
    Ok(batch)
}

/// The batch a payload carries, if it carries one (read from a log, or a new batch).
pub(crate) fn batch_of(payload: &Payload) -> Option<&[u8]> {
    match payload {
        Payload::Normal(r) | Payload::Blank(Some(r)) | Payload::Membership(_, Some(r)) => Some(&r.0),
        _ => None,
    }
}

/// The base offset a payload's batch was stored at (a replica's copy of its leader's entry),
/// or `None` for a new batch the log will place.
pub(crate) fn stored_base_offset(payload: &Payload) -> Option<i64> {
    let base = crate::storage::format::be_i64(batch_of(payload)?.get(..8)?, 0);
    (base != UNASSIGNED).then_some(base)
}

/// The entry at `index` stored as `bytes` (one whole batch).
pub(crate) fn from_batch(index: u64, bytes: Vec<u8>) -> io::Result<(LogId, Payload)> {
    let (batch, _) = Batch::parse(&bytes).map_err(invalid)?;
    let h = *batch.header();
    let term = u64::try_from(h.partition_leader_epoch)
        .map_err(|_| io::Error::other(format!("entry {index} has no leader epoch")))?;
    let id = log_id(term, index);
    if !h.is_control() {
        return Ok((id, Payload::Normal(Records(bytes))));
    }
    let records = batch.records().map_err(invalid)?;
    let first = records.iter().next().transpose().map_err(invalid)?;
    let kind = first
        .as_ref()
        .and_then(|r| r.key)
        .filter(|k| k.len() >= 4)
        .map(|k| be_i16(k, 2));
    let payload = match kind {
        Some(LEADER_CHANGE_CONTROL_TYPE) => Payload::Blank(Some(Records(bytes))),
        Some(MEMBERSHIP_CONTROL_TYPE) => {
            let value = first.and_then(|r| r.value).unwrap_or_default();
            let m = decode_membership(value)?;
            Payload::Membership(m, Some(Records(bytes)))
        }
        // Other control batches (transaction markers) are records to Raft.
        _ => Payload::Normal(Records(bytes)),
    };
    Ok((id, payload))
}

/// A LEADER_CHANGE record's value (KRaft's LeaderChangeMessage, version 0): the leader, and
/// empty voter lists. The leader is named by the epoch: a partition's leaders are not Kafka
/// voters, and the term already says which election this was.
fn leader_change(epoch: i32) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    v.extend_from_slice(&0i16.to_be_bytes()); // version
    v.extend_from_slice(&epoch.to_be_bytes()); // leader id: unknown to Kafka's numbering
    v.extend_from_slice(&[1, 1, 0]); // empty voters, empty granting voters, no tagged fields
    v
}

/// The version byte of a stored membership.
const MEMBERSHIP_VERSION: u8 = 0;

fn encode_membership(m: &Membership) -> Vec<u8> {
    let mut v = vec![MEMBERSHIP_VERSION];
    v.extend(postcard::to_stdvec(m).expect("a membership serializes"));
    v
}

fn decode_membership(value: &[u8]) -> io::Result<Membership> {
    match value.split_first() {
        Some((&MEMBERSHIP_VERSION, rest)) => postcard::from_bytes(rest).map_err(invalid),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a membership entry of an unknown version",
        )),
    }
}

fn invalid(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Records({} bytes)", self.0.len())
    }
}

impl fmt::Display for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Blank(_) => write!(f, "blank"),
            Payload::Normal(r) => write!(f, "normal: {r}"),
            Payload::Membership(m, _) => write!(f, "membership: {m:?}"),
        }
    }
}
