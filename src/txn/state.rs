//! A transactional id's state and its record in `__transaction_state`, in Kafka's layout:
//! key `version i16 = 0, transactional_id string`; value (version 0) `producer_id i64,
//! producer_epoch i16, timeout_ms i32, status i8, partitions (array of topic string and
//! array of partition i32; null when Empty), last_update_ms i64, start_ms i64`. A null value
//! forgets the id.

use std::collections::{BTreeMap, BTreeSet};

use crate::TopicPartition;
use crate::group::wire::{MAX_STRING_BYTES, Reader, put_string};

/// Where a transaction is (Kafka's `TransactionState`, with its ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    /// No transaction since the producer's id was issued.
    Empty,
    /// Partitions were added: records may be written.
    Ongoing,
    /// The producer asked to commit; the COMMIT markers are being written.
    PrepareCommit,
    /// An abort was asked for (or the transaction timed out, or a newer producer fenced it);
    /// the ABORT markers are being written.
    PrepareAbort,
    /// Committed: every marker is written.
    CompleteCommit,
    /// Aborted: every marker is written.
    CompleteAbort,
    /// Forgotten after `transactional.id.expiration.ms` without use.
    Dead,
    /// An abort that also bumps the epoch (a newer producer took the id over).
    PrepareEpochFence,
}

impl TxnStatus {
    /// The id Kafka gives the state in its log.
    pub(crate) fn id(self) -> i8 {
        match self {
            TxnStatus::Empty => 0,
            TxnStatus::Ongoing => 1,
            TxnStatus::PrepareCommit => 2,
            TxnStatus::PrepareAbort => 3,
            TxnStatus::CompleteCommit => 4,
            TxnStatus::CompleteAbort => 5,
            TxnStatus::Dead => 6,
            TxnStatus::PrepareEpochFence => 7,
        }
    }

    fn from_id(id: i8) -> Option<TxnStatus> {
        Some(match id {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            6 => TxnStatus::Dead,
            7 => TxnStatus::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name for it, as DescribeTransactions and ListTransactions answer it.
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
            TxnStatus::Dead => "Dead",
            TxnStatus::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The state ListTransactions' filter names (case-sensitive, as Kafka's).
    pub fn from_name(name: &str) -> Option<TxnStatus> {
        (0..8).filter_map(TxnStatus::from_id).find(|s| s.name() == name)
    }

    /// Markers are being written: the transaction is neither open nor finished.
    pub(crate) fn is_preparing(self) -> bool {
        matches!(
            self,
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort | TxnStatus::PrepareEpochFence
        )
    }
}

/// What the coordinator knows of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    /// The producer id the transactional id is bound to.
    pub producer_id: i64,
    /// Its current epoch: a producer with an older one is fenced.
    pub producer_epoch: i16,
    /// `transaction.timeout.ms`: an Ongoing transaction older than this is aborted.
    pub timeout_ms: i32,
    /// Where its transaction is.
    pub status: TxnStatus,
    /// The partitions its transaction wrote to (or will write markers to).
    pub partitions: BTreeSet<TopicPartition>,
    /// When the record last changed, in milliseconds since the Unix epoch.
    pub last_update_ms: i64,
    /// When its transaction started (-1 when none is open).
    pub start_ms: i64,
}

/// The record key of `transactional_id`.
pub(crate) fn key_bytes(transactional_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + transactional_id.len());
    k.extend_from_slice(&0i16.to_be_bytes());
    put_string(&mut k, transactional_id);
    k
}

/// The record value of `m`.
pub(crate) fn value_bytes(m: &TxnMetadata) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + m.partitions.len() * 8);
    v.extend_from_slice(&0i16.to_be_bytes());
    v.extend_from_slice(&m.producer_id.to_be_bytes());
    v.extend_from_slice(&m.producer_epoch.to_be_bytes());
    v.extend_from_slice(&m.timeout_ms.to_be_bytes());
    v.push(m.status.id() as u8);
    if m.status == TxnStatus::Empty {
        v.extend_from_slice(&(-1i32).to_be_bytes());
    } else {
        let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for tp in &m.partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        v.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
        for (topic, partitions) in by_topic {
            put_string(&mut v, topic);
            v.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
            for p in partitions {
                v.extend_from_slice(&(p as i32).to_be_bytes());
            }
        }
    }
    v.extend_from_slice(&m.last_update_ms.to_be_bytes());
    v.extend_from_slice(&m.start_ms.to_be_bytes());
    v
}

/// The transactional id of a record key; `None` if it is not one this build reads.
pub(crate) fn parse_key(k: &[u8]) -> Option<String> {
    let mut f = Reader(k);
    if f.i16()? != 0 {
        return None;
    }
    let id = f.string()?;
    f.is_done().then_some(id)
}

/// A record value; `None` if it is not one this build reads.
pub(crate) fn parse_value(v: &[u8]) -> Option<TxnMetadata> {
    let mut f = Reader(v);
    if f.i16()? != 0 {
        return None;
    }
    let producer_id = f.i64()?;
    let producer_epoch = f.i16()?;
    let timeout_ms = f.i32()?;
    let status = TxnStatus::from_id(f.i8()?)?;
    let mut partitions = BTreeSet::new();
    let topics = f.i32()?;
    for _ in 0..topics.max(0) {
        let topic = f.string()?;
        let n = f.count()?;
        for _ in 0..n {
            let p = u32::try_from(f.i32()?).ok()?;
            partitions.insert(TopicPartition::new(topic.clone(), p));
        }
    }
    let last_update_ms = f.i64()?;
    let start_ms = f.i64()?;
    f.is_done().then_some(TxnMetadata {
        producer_id,
        producer_epoch,
        timeout_ms,
        status,
        partitions,
        last_update_ms,
        start_ms,
    })
}

/// The longest transactional id the log's key holds.
pub(crate) const MAX_TRANSACTIONAL_ID_BYTES: usize = MAX_STRING_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_kafkas_layout() {
        let k = key_bytes("payments");
        assert_eq!(&k[..4], &[0, 0, 0, 8]);
        assert_eq!(parse_key(&k).as_deref(), Some("payments"));
        let mut m = TxnMetadata {
            producer_id: 4_000_001,
            producer_epoch: 3,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: [
                TopicPartition::new("out", 1),
                TopicPartition::new("out", 0),
                TopicPartition::new("__consumer_offsets", 0),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 1_700_000_000_100,
            start_ms: 1_700_000_000_000,
        };
        let v = value_bytes(&m);
        assert_eq!(&v[..2], &[0, 0]);
        assert_eq!(v[16], 1, "the status id");
        assert_eq!(parse_value(&v), Some(m.clone()));
        // An empty transaction's partitions are null.
        m.status = TxnStatus::Empty;
        m.partitions.clear();
        let v = value_bytes(&m);
        assert_eq!(&v[17..21], &(-1i32).to_be_bytes());
        assert_eq!(parse_value(&v), Some(m));
        assert_eq!(parse_value(&v[..v.len() - 1]), None);
        for s in 0..8 {
            let status = TxnStatus::from_id(s).unwrap();
            assert_eq!(status.id(), s);
            assert_eq!(TxnStatus::from_name(status.name()), Some(status));
        }
    }
}
