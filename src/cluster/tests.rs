//! The replica's parts against openraft's own storage test suite, and a model of the entry
//! index under appends, truncations and purges.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};

use std::path::Path;

use openraft::entry::RaftEntry;
use proptest::prelude::*;

use crate::cluster::entry::{Payload, Records, UNASSIGNED};
use crate::cluster::log_store::{LogStore, Replica};
use crate::cluster::raft::{Entry, LogId, TypeConfig, log_id};
use crate::cluster::state_machine::StateMachine;
use crate::config::{Fsync, LogConfig};
use crate::storage::format::Batch;
use crate::storage::{BatchBuilder, Compression};
use crate::storage::{PartitionLog, StdFs};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), openraft::StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (store, sm) = open(dir.path());
        Ok((dir, store, sm))
    }
}

fn open(dir: &std::path::Path) -> (LogStore, StateMachine) {
    let config = LogConfig {
        fsync: Fsync::Always,
        ..LogConfig::default()
    };
    let log = PartitionLog::builder(dir)
        .config(config)
        .replicated()
        .open()
        .expect("the log opens");
    let replica = Replica::open(log, Arc::new(StdFs)).expect("the replica opens");
    let store = LogStore::new(replica.clone()).expect("the I/O thread starts");
    (store, StateMachine::new(replica))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder)
        .await
        .expect("openraft's storage suite passes");
}

/// A leader's new entry: `records` records (none: a blank entry).
fn entry(term: u64, index: u64, records: usize) -> Entry {
    let id = log_id(term, index);
    if records == 0 {
        return Entry::new_blank(id);
    }
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..records {
        b.push(
            1_700_000_000_000,
            Some(format!("k{i}").as_bytes()),
            Some(b"v"),
            &[],
        );
    }
    let mut batch = b.finish().expect("a batch");
    batch.set_base_offset(UNASSIGNED);
    Entry::new_normal(id, Records(batch.into_bytes()))
}

/// What the model expects of one entry.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Expected {
    index: u64,
    term: u64,
    base_offset: i64,
    records: usize,
}

#[derive(Debug, Clone)]
enum Op {
    /// Entries of the given record counts, in a term `bump` past the last.
    Append {
        bump: u64,
        records: Vec<usize>,
    },
    /// Keep this fraction (in 1/8) of the entries.
    Truncate(u8),
    /// Purge this fraction (in 1/8) of the entries.
    Purge(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..2, proptest::collection::vec(0usize..4, 1..6))
            .prop_map(|(bump, records)| Op::Append { bump, records }),
        1 => (0u8..=8).prop_map(Op::Truncate),
        1 => (0u8..=8).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

fn open_replica(dir: &Path) -> Arc<Replica> {
    let log = PartitionLog::builder(dir)
        .config(LogConfig {
            fsync: Fsync::Never,
            segment_bytes: 700, // a few batches a segment: purges delete segments
            ..LogConfig::default()
        })
        .replicated()
        .open()
        .expect("the log opens");
    Replica::open(log, Arc::new(StdFs)).expect("the replica opens")
}

/// Checks the replica against the model: its log state, every entry's id and offset, and
/// that each entry reads back as what was appended.
fn check(replica: &Replica, model: &[Expected], purged: Option<LogId>, end_offset: i64) {
    let idx = replica.index.read();
    let last = model.last().map(|e| log_id(e.term, e.index)).or(purged);
    assert_eq!(idx.last_log_id(), last, "last log id");
    let next = model
        .last()
        .map_or(purged.map_or(0, |p| p.index + 1), |e| e.index + 1);
    assert_eq!(idx.next_index(), next, "next index");
    assert_eq!(idx.offset_of(next), Some(end_offset), "end offset");
    for e in model {
        assert_eq!(
            idx.offset_of(e.index),
            Some(e.base_offset),
            "offset of {}",
            e.index
        );
        assert_eq!(idx.term_of(e.index), Some(e.term), "term of {}", e.index);
    }
    drop(idx);
    let first = model.first().map_or(next, |e| e.index);
    let read = replica.read_entries(0, u64::MAX).expect("entries read");
    assert_eq!(read.len(), model.len(), "entries read back");
    for (got, want) in read.iter().zip(model) {
        assert_eq!(got.log_id, log_id(want.term, want.index));
        let (base, count) = match &got.payload {
            Payload::Normal(Records(bytes)) => {
                let (b, _) = Batch::parse(bytes).expect("a stored batch");
                (b.header().base_offset, b.header().record_count as usize)
            }
            Payload::Blank(Some(Records(bytes))) => {
                let (b, _) = Batch::parse(bytes).expect("a stored batch");
                assert!(b.header().is_control());
                (b.header().base_offset, 0)
            }
            other => panic!("entry {} read back as {other}", want.index),
        };
        assert_eq!(
            (base, count),
            (want.base_offset, want.records),
            "entry {}",
            want.index
        );
    }
    assert!(first >= purged.map_or(0, |p| p.index + 1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The entry index, truncation and purge against a model, through reopens (which rebuild
    /// the index from the batches' headers and `replica.meta`).
    #[test]
    fn entry_index_follows_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut replica = open_replica(dir.path());
        let mut model: Vec<Expected> = Vec::new();
        let mut purged: Option<LogId> = None;
        let mut end_offset = 0i64;
        let mut term = 1u64;
        for op in ops {
            match op {
                Op::Append { bump, records } => {
                    term += bump;
                    let first = model.last().map_or(purged.map_or(0, |p| p.index + 1), |e| e.index + 1);
                    let mut entries = Vec::new();
                    for (index, n) in (first..).zip(records) {
                        entries.push(entry(term, index, n));
                        model.push(Expected { index, term, base_offset: end_offset, records: n });
                        end_offset += n.max(1) as i64;
                    }
                    replica.append(entries).expect("entries append");
                }
                Op::Truncate(eighths) => {
                    let keep = model.len() * eighths as usize / 8;
                    let last = match keep {
                        0 => purged,
                        k => Some(log_id(model[k - 1].term, model[k - 1].index)),
                    };
                    if keep < model.len() {
                        end_offset = model[keep].base_offset;
                    }
                    model.truncate(keep);
                    replica.truncate_after(last).expect("truncation");
                }
                Op::Purge(eighths) => {
                    let n = model.len() * eighths as usize / 8;
                    if n == 0 {
                        continue;
                    }
                    let upto = log_id(model[n - 1].term, model[n - 1].index);
                    model.drain(..n);
                    purged = Some(upto);
                    replica.purge(upto).expect("purge");
                }
                Op::Reopen => {
                    replica.log.close().expect("the log closes");
                    drop(replica);
                    replica = open_replica(dir.path());
                }
            }
            check(&replica, &model, purged, end_offset);
        }
    }
}
