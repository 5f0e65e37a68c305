//! The replica's parts against openraft's own storage test suite, and a model of the entry
//! index under appends, truncations and purges.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use openraft::entry::RaftEntry;
use proptest::prelude::*;

use crate::cluster::entry::{Payload, Records, UNASSIGNED};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::log_store::{Io, LogStore, MAX_ENTRY_BYTES, Replica, Restart, SavedSnapshot};
use crate::cluster::partition::PartitionReplica;
use crate::cluster::peer::{self, GroupId, Groups, Router};
use crate::cluster::raft::{Entry, LogId, Node, NodeId, SnapshotMeta, TypeConfig, log_id};
use crate::cluster::state_machine::{SnapshotData, StateMachine};
use crate::config::{CleanupPolicy, Fsync, LogConfig};
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
    let replica = Replica::open(log, Arc::new(StdFs), Io::Threads).expect("the replica opens");
    let store = LogStore::new(replica.clone()).expect("the I/O thread starts");
    let writes = store.writes();
    (store, StateMachine::new(replica, writes, None))
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
    /// Commit this fraction (in 1/8) of the entries, roll, and compact.
    Compact(u8),
    /// Install a snapshot `skip` entries past the last, whose next entry is `gap` offsets
    /// from the log end (back too: a replica's tail may not have been committed).
    Restart {
        skip: u64,
        gap: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..2, proptest::collection::vec(0usize..4, 1..6))
            .prop_map(|(bump, records)| Op::Append { bump, records }),
        1 => (0u8..=8).prop_map(Op::Truncate),
        1 => (0u8..=8).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
        1 => (0u8..=8).prop_map(Op::Compact),
        1 => (1u64..4, -6i64..40).prop_map(|(skip, gap)| Op::Restart { skip, gap }),
    ]
}

fn open_replica(dir: &Path) -> Arc<Replica> {
    let log = PartitionLog::builder(dir)
        .config(LogConfig {
            fsync: Fsync::Never,
            segment_bytes: 700, // a few batches a segment: purges delete segments
            cleanup_policy: CleanupPolicy::Compact,
            ..LogConfig::default()
        })
        .replicated()
        .open()
        .expect("the log opens");
    Replica::open(log, Arc::new(StdFs), Io::Threads).expect("the replica opens")
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
    let read = replica
        .read_entries(0, u64::MAX, usize::MAX)
        .expect("entries read");
    assert_eq!(read.len(), model.len(), "entries read back");
    // Replication's reads stop at the first entry that reaches their byte budget.
    let one = replica.read_entries(0, u64::MAX, 1).expect("entries read");
    assert_eq!(one.len(), model.len().min(1), "a read with a budget of one byte");
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

/// Every keyed record (control batches' aside) in a replica's log: (offset, key).
fn keyed_records(replica: &Replica) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for e in replica
        .read_entries(0, u64::MAX, usize::MAX)
        .expect("entries read")
    {
        if let Payload::Normal(Records(bytes)) = &e.payload {
            let (batch, _) = Batch::parse(bytes).expect("a stored batch");
            for r in batch.records().expect("records").iter() {
                let r = r.expect("a record");
                out.push((r.offset, r.key.expect("a key").to_vec()));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The entry index, truncation, purge, compaction and restarts after a snapshot against a
    /// model, through reopens (which rebuild the index from the batches' headers and
    /// `replica.meta`). Compaction thins or empties batches but keeps every entry at its
    /// offsets, and never the latest record of a key.
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
                Op::Compact(eighths) => {
                    let k = model.len() * eighths as usize / 8;
                    let committed = model.get(k).map_or(end_offset, |e| e.base_offset);
                    replica.log.commit_to(committed);
                    let committed = replica.log.high_watermark();
                    replica.log.roll().expect("a roll");
                    let before = keyed_records(&replica);
                    replica.log.compact().expect("a clean");
                    let after = keyed_records(&replica);
                    let mut latest = BTreeMap::new();
                    for (offset, key) in &before {
                        latest.insert(key.clone(), *offset);
                        if *offset >= committed {
                            assert!(after.contains(&(*offset, key.clone())), "{offset} is not committed");
                        }
                    }
                    for (key, offset) in latest {
                        assert!(after.contains(&(offset, key.clone())), "the latest {key:?} went");
                    }
                    let read = replica.read_entries(0, u64::MAX, usize::MAX).expect("entries read");
                    for (got, want) in read.iter().zip(model.iter_mut()) {
                        let count = match &got.payload {
                            Payload::Normal(Records(bytes)) => {
                                Batch::parse(bytes).expect("a stored batch").0.header().record_count as usize
                            }
                            _ => 0,
                        };
                        assert!(count <= want.records, "entry {} grew", want.index);
                        want.records = count;
                    }
                }
                Op::Restart { skip, gap } => {
                    let last = model.last().map_or(purged.map_or(0, |p| p.index + 1), |e| e.index + 1)
                        + skip - 1;
                    let next_offset = (end_offset + gap).max(0);
                    let snap = SavedSnapshot {
                        meta: SnapshotMeta {
                            last_log_id: Some(log_id(term, last)),
                            last_membership: Default::default(),
                        },
                        data: SnapshotData { next_offset },
                    };
                    replica.save_snapshot(snap).expect("the snapshot is saved");
                    model.clear();
                    purged = Some(log_id(term, last));
                    end_offset = next_offset;
                    assert_eq!(replica.log.log_start_offset(), next_offset);
                    assert_eq!(replica.log.high_watermark(), next_offset);
                }
            }
            check(&replica, &model, purged, end_offset);
        }
    }
}

/// A node of the in-process test clusters: a router, its groups and their peer server.
struct TestNode {
    id: NodeId,
    groups: Arc<Groups>,
    stop: watch::Sender<bool>,
    replica: PartitionReplica,
}

/// The partition the in-process test clusters replicate.
fn test_group() -> GroupId {
    GroupId {
        topic: "t".into(),
        partition: 0,
        incarnation: 0,
    }
}

/// Starts `n` nodes on loopback, each with a replica of partition `t-0` in its own directory.
async fn start_nodes(dirs: &[tempfile::TempDir]) -> (Vec<TestNode>, Vec<SocketAddr>) {
    let mut listeners = Vec::new();
    for _ in dirs {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("a loopback port"));
    }
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, (dir, listener)) in dirs.iter().zip(listeners).enumerate() {
        nodes.push(start_node(i as NodeId + 1, dir.path(), listener, &addrs).await);
    }
    (nodes, addrs)
}

/// Starts a node in each of `dirs` ([`start_nodes`]) and their group of `t-0`, every node
/// a member.
async fn start_group(dirs: &[tempfile::TempDir]) -> (Vec<TestNode>, Vec<SocketAddr>) {
    let (nodes, addrs) = start_nodes(dirs).await;
    let members: BTreeMap<NodeId, Node> = nodes.iter().map(|n| (n.id, Node::default())).collect();
    nodes[0]
        .replica
        .raft
        .initialize(members)
        .await
        .expect("the group initializes");
    (nodes, addrs)
}

/// Starts node `id` (its peers at `addrs`, in id order) with its replica of `t-0` in `dir`.
async fn start_node(id: NodeId, dir: &Path, listener: TcpListener, addrs: &[SocketAddr]) -> TestNode {
    let router = Router::new(id);
    for (j, addr) in addrs.iter().enumerate() {
        router.set_peer(j as NodeId + 1, *addr);
    }
    let groups = Arc::new(Groups::default());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(peer::serve(id, listener, groups.clone(), router.clone(), stopped));
    let config = LogConfig {
        fsync: Fsync::Always,
        segment_bytes: 4096,
        ..LogConfig::default()
    };
    let replica = PartitionReplica::open(id, dir.join("t-0"), config, router, test_group())
        .await
        .expect("the replica starts");
    groups.insert(test_group(), replica.raft.clone());
    TestNode {
        id,
        groups,
        stop,
        replica,
    }
}

/// Stops a node: its Raft and its peer server.
async fn stop_node(node: &TestNode) {
    node.stop.send(true).unwrap();
    node.replica.shutdown().await.expect("the node stops");
    node.groups.remove(&test_group());
    node.replica.replica.log.close().expect("the log closes");
}

/// The node that leads, once all the given nodes agree on one (within 10 s).
async fn leader(nodes: &[&TestNode]) -> usize {
    for _ in 0..200 {
        let mut seen = Vec::new();
        for n in nodes {
            seen.push(n.replica.raft.current_leader().await);
        }
        if let Some(Some(id)) = seen.first().copied()
            && seen.iter().all(|l| *l == Some(id))
            && let Some(i) = nodes.iter().position(|n| n.id == id)
        {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader agreed on in 10 s");
}

/// Every record (not control) in a replica's log: (offset, value).
pub(super) fn records_of(replica: &Replica) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut from = replica.log.log_start_offset();
    loop {
        let fetch = replica.log.read_unpublished(from, 1 << 20).expect("a read");
        if fetch.is_empty() {
            return out;
        }
        from = records_in(&fetch, &mut out);
    }
}

/// Appends the records (not control) of `fetch` to `out` as (offset, value); returns the
/// offset after its last batch.
pub(super) fn records_in(fetch: &crate::storage::Fetch, out: &mut Vec<(i64, Vec<u8>)>) -> i64 {
    let mut next = -1;
    for batch in fetch.batches() {
        next = batch.header().next_offset();
        if batch.header().is_control() {
            continue;
        }
        for r in batch.records().expect("records").iter() {
            let r = r.expect("a record");
            out.push((r.offset, r.value.unwrap_or_default().to_vec()));
        }
    }
    next
}

/// The raw bytes of a replica's log below `end`.
fn bytes_below(replica: &Replica, end: i64) -> Vec<u8> {
    bytes_between(replica, 0, end)
}

/// The raw bytes of a replica's log in `[from, end)` (from a batch boundary).
pub(super) fn bytes_between(replica: &Replica, mut from: i64, end: i64) -> Vec<u8> {
    let mut out = Vec::new();
    while from < end {
        let fetch = replica.log.read_unpublished(from, 1 << 20).expect("a read");
        if fetch.is_empty() {
            return out; // the log ends sooner
        }
        for batch in fetch.batches() {
            if batch.header().base_offset >= end {
                return out;
            }
            from = batch.header().next_offset();
            out.extend_from_slice(batch.as_bytes());
        }
    }
    out
}

/// Appends batches of values `first..first + n` at each of `nodes` in turn (those that do not
/// lead forward to the one that does), half through the async path and half through
/// `PartitionLog::append` on a thread of its own, as a producer does; returns what was
/// acknowledged.
async fn propose_values(nodes: &[&TestNode], first: usize, n: usize) -> Vec<(i64, Vec<u8>)> {
    let mut acked = Vec::new();
    for v in first..first + n {
        let value = format!("value-{v}").into_bytes();
        let mut b = BatchBuilder::new(Compression::None);
        b.push(1_700_000_000_000, None, Some(&value), &[]);
        let batch = b.finish().unwrap();
        let node = nodes[v % nodes.len()];
        let base_offset = if v % 2 == 0 {
            node.replica.propose(batch).await.expect("a proposal").base_offset
        } else {
            let log = node.replica.replica.log.clone();
            tokio::task::spawn_blocking(move || log.append(batch))
                .await
                .unwrap()
                .expect("an append")
                .base_offset
        };
        acked.push((base_offset, value));
    }
    acked
}

/// Waits (10 s at most) until every node's high watermark reaches `end`.
async fn converge(nodes: &[&TestNode], end: i64) {
    for _ in 0..200 {
        if nodes
            .iter()
            .all(|n| n.replica.replica.log.high_watermark() >= end)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hws: Vec<_> = nodes
        .iter()
        .map(|n| n.replica.replica.log.high_watermark())
        .collect();
    panic!("high watermarks {hws:?} did not reach {end}");
}

/// Three nodes on loopback replicate a partition: each acknowledged batch is on every replica
/// at the offset it was acknowledged at, the replicas' logs are identical byte for byte, and
/// when the leader stops another takes over without losing anything acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_every_acknowledged_batch_through_a_failover() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, _) = start_group(&dirs).await;
    let all: Vec<&TestNode> = nodes.iter().collect();

    let mut acked = propose_values(&all, 0, 40).await;
    let end = acked.last().unwrap().0 + 1;
    converge(&all, end).await;
    let first = bytes_below(&nodes[0].replica.replica, end);
    assert!(!first.is_empty());
    for n in &nodes[1..] {
        assert!(
            bytes_below(&n.replica.replica, end) == first,
            "node {} holds other bytes than node 1",
            n.id
        );
    }

    // The leader stops: its Raft and its peer server.
    let old = leader(&all).await;
    stop_node(&nodes[old]).await;
    let survivors: Vec<&TestNode> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, n)| n)
        .collect();
    // Once they agree on a new leader. (A batch forwarded to the old leader as it stopped,
    // over a link not yet seen closed, fails with an unknown outcome, as it must: the old
    // leader may have taken it.)
    leader(&survivors).await;
    acked.extend(propose_values(&survivors, 40, 40).await);
    let end = acked.last().unwrap().0 + 1;
    converge(&survivors, end).await;

    for n in &survivors {
        let held: BTreeMap<i64, Vec<u8>> = records_of(&n.replica.replica).into_iter().collect();
        for (offset, value) in &acked {
            assert_eq!(held.get(offset), Some(value), "node {} at offset {offset}", n.id);
        }
        let mut values: Vec<_> = held.values().collect();
        let count = values.len();
        values.sort();
        values.dedup();
        assert_eq!(values.len(), count, "node {} holds a value twice", n.id);
    }
    assert_eq!(
        bytes_below(&survivors[0].replica.replica, end),
        bytes_below(&survivors[1].replica.replica, end),
        "the survivors' logs differ"
    );
}

/// Waits (10 s at most) until `ready` holds.
async fn eventually(what: &str, ready: impl Fn() -> bool) {
    for _ in 0..200 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

/// Retention purges each replica below the segments it deletes (Raft snapshots, then purges
/// its log); a replica that was down meanwhile, behind its leader's purge point, installs the
/// leader's snapshot, restarts its log at the snapshot's offset and catches up by
/// replication; and it restarts from its own snapshot afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_the_replicas_and_a_lagging_one_restarts_from_a_snapshot() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (mut nodes, addrs) = start_group(&dirs).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let mut acked = propose_values(&all, 0, 10).await;
    converge(&all, acked.last().unwrap().0 + 1).await;

    // Node 3 stops; the others write many segments' worth and apply retention.
    stop_node(&nodes[2]).await;
    let two: Vec<&TestNode> = nodes[..2].iter().collect();
    leader(&two).await;
    acked.extend(propose_values(&two, 10, 300).await);
    let end = acked.last().unwrap().0 + 1;
    converge(&two, end).await;
    for n in &two {
        let log = &n.replica.replica.log;
        let mut config = log.config();
        config.retention_bytes = Some(8192);
        log.set_config(config).expect("retention is set");
    }
    for n in &two {
        let log = n.replica.replica.log.clone();
        eventually("retention purges the log", || {
            log.enforce_retention(crate::storage::now_ms())
                .expect("retention runs");
            log.log_start_offset() > 100
        })
        .await;
        assert!(
            log.size_bytes() < 4 * 4096,
            "node {} kept {} bytes",
            n.id,
            log.size_bytes()
        );
    }
    let start = two
        .iter()
        .map(|n| n.replica.replica.log.log_start_offset())
        .max()
        .unwrap();

    // Node 3 comes back: what it lacks is purged everywhere, so it takes a snapshot.
    let listener = TcpListener::bind(addrs[2]).await.expect("node 3's port again");
    nodes[2] = start_node(3, dirs[2].path(), listener, &addrs).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    converge(&all, end).await;
    let third = &nodes[2].replica.replica;
    assert!(
        third.log.log_start_offset() >= start,
        "node 3 restarted its log at {}, below the purge point {start}",
        third.log.log_start_offset()
    );
    assert!(
        third.snapshot().is_some(),
        "node 3 keeps the snapshot it installed"
    );
    acked.extend(propose_values(&all, 310, 20).await);
    let end = acked.last().unwrap().0 + 1;
    converge(&all, end).await;

    // And node 3 restarts from its own snapshot and log.
    stop_node(&nodes[2]).await;
    let listener = TcpListener::bind(addrs[2]).await.expect("node 3's port again");
    nodes[2] = start_node(3, dirs[2].path(), listener, &addrs).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    converge(&all, end).await;
    let from = nodes[2].replica.replica.log.log_start_offset();
    for n in &all {
        let held: BTreeMap<i64, Vec<u8>> = records_of(&n.replica.replica).into_iter().collect();
        for (offset, value) in acked.iter().filter(|(o, _)| *o >= from) {
            assert_eq!(held.get(offset), Some(value), "node {} at offset {offset}", n.id);
        }
    }
}

/// An entry past the log end is refused until a snapshot covers the entries before it;
/// the snapshot restarts the log at its offset, where the entry then goes; a snapshot older
/// than the one kept changes nothing; and a restart that a crash cut short (its marker still
/// there) is finished when the replica opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_past_the_log_restarts_it() {
    use openraft::storage::{IOFlushed, RaftLogStorage};
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _sm) = open(dir.path());
    let writes = store.writes();
    let first: Vec<Entry> = (0..3).map(|i| entry(1, i, 2)).collect();
    store
        .append(first, IOFlushed::noop())
        .await
        .expect("entries append");

    // The leader's entry 10, stored at offset 100.
    let mut leaders = match entry(2, 10, 3).payload {
        Payload::Normal(Records(bytes)) => crate::storage::RecordBatch::from_stored(bytes).unwrap(),
        _ => unreachable!(),
    };
    leaders.set_base_offset(100);
    let after = Entry::new_normal(log_id(2, 10), Records(leaders.into_bytes()));
    let refused = store.append(vec![after.clone()], IOFlushed::noop()).await;
    assert!(
        refused.is_err(),
        "an entry past the log end appended without its snapshot"
    );
    let snapshot = |term, index, next_offset| SavedSnapshot {
        meta: SnapshotMeta {
            last_log_id: Some(log_id(term, index)),
            last_membership: Default::default(),
        },
        data: SnapshotData { next_offset },
    };
    writes
        .save_snapshot(snapshot(2, 9, 100))
        .await
        .expect("the snapshot is saved");
    store
        .append(vec![after], IOFlushed::noop())
        .await
        .expect("the entry appends after the snapshot");
    let replica = store.replica.clone();
    assert_eq!(replica.log.log_start_offset(), 100);
    assert_eq!(replica.log.log_end_offset(), 103);
    assert_eq!(replica.index.read().offset_of(10), Some(100));
    assert_eq!(
        replica.index.read().offset_of(2),
        None,
        "the old entries are gone"
    );

    // A snapshot this replica built before it installed its leader's newer one.
    writes
        .save_snapshot(snapshot(1, 2, 6))
        .await
        .expect("an older snapshot is taken");
    assert_eq!(replica.snapshot().unwrap().meta.last_log_id, Some(log_id(2, 9)));
    assert_eq!(
        replica.log.log_start_offset(),
        100,
        "an older snapshot restarted the log"
    );

    // A crash after the restart's marker was written: the open finishes the restart.
    let marker = Restart {
        last: log_id(2, 40),
        offset: 500,
    };
    crate::storage::meta::write(&StdFs, &dir.path().join(crate::storage::RESTART_FILE), &marker).unwrap();
    drop(store);
    replica.log.close().expect("the log closes");
    drop(replica);
    let (store, _sm) = open(dir.path());
    assert_eq!(store.replica.log.log_start_offset(), 500);
    assert_eq!(store.replica.log.log_end_offset(), 500);
    assert_eq!(store.replica.index.read().next_index(), 41);
    assert!(!dir.path().join(crate::storage::RESTART_FILE).exists());
}

/// A batch larger than one AppendEntries may carry is refused before anything is written,
/// whatever the topic's `max.message.bytes` (a Kafka record set checks all its batches
/// against the same limit before writing any).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_to_replicate_is_refused() {
    let dirs = vec![tempfile::tempdir().unwrap()];
    let (nodes, _) = start_group(&dirs).await;
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1_700_000_000_000, None, Some(&vec![7u8; MAX_ENTRY_BYTES]), &[]);
    let batch = b.finish().unwrap();
    leader(&[&nodes[0]]).await;
    let log = nodes[0].replica.replica.log.clone();
    let end = log.log_end_offset();
    let mut config = log.config();
    config.max_message_bytes = 2 * MAX_ENTRY_BYTES;
    log.set_config(config).unwrap();
    // Through the log, as producers and Kafka clients append: refused before replication.
    let (appended, batch) = tokio::task::spawn_blocking(move || (log.append(batch.clone()), batch))
        .await
        .unwrap();
    match appended {
        Err(crate::Error::BatchTooLarge { max, .. }) => assert_eq!(max, MAX_ENTRY_BYTES),
        other => panic!("a batch over {MAX_ENTRY_BYTES} bytes was not refused: {other:?}"),
    }
    // Through the group itself.
    match nodes[0].replica.propose(batch).await {
        Err(crate::Error::BatchTooLarge { max, .. }) => assert_eq!(max, MAX_ENTRY_BYTES),
        other => panic!("a batch over {MAX_ENTRY_BYTES} bytes was not refused: {other:?}"),
    }
    assert_eq!(
        nodes[0].replica.replica.log.log_end_offset(),
        end,
        "something was written"
    );
}

#[test]
fn the_controller_is_voted_for_by_three_or_five_founders() {
    use crate::cluster::controller::controller_voters;
    assert_eq!(controller_voters(&[7]), [7]);
    assert_eq!(controller_voters(&[2, 1]), [1, 2]);
    assert_eq!(controller_voters(&[3, 1, 2]), [1, 2, 3]);
    assert_eq!(controller_voters(&[4, 3, 2, 1]), [1, 2, 3]);
    assert_eq!(controller_voters(&[5, 4, 3, 2, 1]), [1, 2, 3, 4, 5]);
    assert_eq!(controller_voters(&[9, 8, 7, 6, 5, 4, 3]), [3, 4, 5, 6, 7]);
}

#[test]
fn timing_reaches_raft() {
    use crate::cluster::Timing;
    use crate::cluster::partition::raft_config;
    let timing = Timing {
        heartbeat: Duration::from_millis(40),
        election_timeout_min: Duration::from_millis(250),
        election_timeout_max: Duration::from_millis(700),
    };
    let c = raft_config(&timing).unwrap();
    assert_eq!(
        (
            c.heartbeat_interval,
            c.election_timeout_min,
            c.election_timeout_max
        ),
        (40, 250, 700)
    );
    assert_eq!(c.enable_leader_restore, Some(false));
}

#[test]
fn a_seed_refuses_a_node_it_cannot_reach_and_answers_a_repeated_join_without_a_new_command() {
    use crate::cluster::controller::NodeInfo;
    use crate::cluster::peer::NotJoined;
    let dir = tempfile::tempdir().unwrap();
    let seed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let node = crate::cluster::ClusterBuilder::new(1, dir.path())
        .voters([(1, seed)])
        .start()
        .unwrap();
    node.wait_ready(Duration::from_secs(30)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ask = |peer_address: SocketAddr| {
        let joiner = NodeInfo {
            id: 7,
            peer_address,
            kafka_address: None,
        };
        rt.block_on(peer::join(&peer::Tcp, seed, joiner))
            .expect("the seed answers")
    };
    // Nothing listens there: refused, and nothing registered.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    match ask(closed) {
        Err(NotJoined::Refused(why)) => assert!(why.contains("cannot reach"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(!node.nodes().iter().any(|n| n.id == 7));
    // Listening: registered; asked again, answered from what is registered.
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let welcome = ask(open.local_addr().unwrap()).expect("joined");
    assert!(welcome.nodes.iter().any(|n| n.id == 7));
    let log_end = || {
        let metadata = node.inner.controller.metadata.get().expect("started");
        metadata.replica.log.log_end_offset()
    };
    let before = log_end();
    let again = ask(open.local_addr().unwrap()).expect("joined again");
    assert_eq!(again, welcome);
    assert_eq!(log_end(), before, "no new command");
    node.shutdown().unwrap();
}
