//! Deterministic simulations of the cluster on turmoil's simulated network and clock.
//!
//! Two simulations share this module's parts:
//!
//! - [`replicas`] runs three nodes' partition replicas alone (their logs on real files, their
//!   Raft groups, the peer link), with retention trimming one partition, so that replicas
//!   restart from their leader's snapshot;
//! - [`clusters`] runs three whole nodes ([`Cluster`](crate::cluster::Cluster)s started as the
//!   example broker starts them: broker, controller, partition groups, the offsets topic),
//!   creating topics through the controller while producers and consumers run on every node.
//!
//! In both, a schedule drawn from the seed crashes nodes (every file cut back to what was
//! synced, sometimes with a torn tail; sometimes every node at once, sometimes in the middle
//! of its storage work), restarts them, cuts links (both ways or one way) and holds messages.
//! Every step checks Raft's safety as the nodes report it, for every group: one leader per
//! term, a committed entry that never changes its term, commit and apply points that never
//! go back. At the end the faults heal, the nodes catch up, and a checker reads the history:
//! every acknowledged record at its offset, no offset with two values, no value at two
//! offsets, no consumer that skipped a record or went back, and replicas identical byte for
//! byte.
//!
//! Everything that decides a run's course runs on the test's thread in an order fixed by the
//! seed: turmoil's network and clock, the nodes' storage work (inline, [`Io::Inline`]) and
//! openraft's random draws ([`seed_this_thread`]); so a seed replays the same run. (A whole
//! node's broker starts its housekeeper's threads too; they stay idle, as the simulated
//! topics keep every record and their rounds come on the wall clock.) `SEEDS=1-200` (or `SEEDS=7,9`)
//! runs other seeds than the fixed set; `SIM_SECONDS` lengthens the faulty phase.

mod clusters;
mod replicas;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::cluster::log_store::{Io, Replica};
use crate::cluster::peer::{Listener, Raft, ReadHalf, Transport, WriteHalf};
use crate::cluster::raft::{NodeId, seed_this_thread, term_of};
use crate::cluster::tests::{bytes_between, records_of};
use crate::storage::FaultyFs;
use openraft::async_runtime::WatchReceiver;

/// The port every node listens on for its peers.
const PEER_PORT: u16 = 7000;

fn host(node: NodeId) -> String {
    format!("n{node}")
}

/// Peer links over turmoil's simulated TCP.
struct SimNet;

impl Transport for SimNet {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(ReadHalf, WriteHalf)>> {
        Box::pin(async move {
            let (r, w) = turmoil::net::TcpStream::connect(addr).await?.into_split();
            Ok((Box::new(r) as ReadHalf, Box::new(w) as WriteHalf))
        })
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(ReadHalf, WriteHalf, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = self.0.accept().await?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r) as ReadHalf, Box::new(w) as WriteHalf, from))
        })
    }
}

/// A record a producer was told is committed.
#[derive(Debug, Clone)]
struct Acked {
    partition: i32,
    offset: i64,
    value: Vec<u8>,
}

/// One consumer's session: a node's boot, a partition, and how many times the consumer
/// started over at the log start (its position fell below it).
type Session = (NodeId, u64, i32, u32);

/// A record a consumer read, in one session.
#[derive(Debug, Clone)]
struct Polled {
    session: Session,
    offset: i64,
    value: Vec<u8>,
}

/// What the nodes did, kept outside the simulation (it survives crashes).
#[derive(Default)]
struct History {
    acked: Vec<Acked>,
    polled: Vec<Polled>,
    /// Where each session began reading.
    began: BTreeMap<Session, i64>,
    /// Proposals that failed: their outcome is unknown.
    unknown: u64,
}

/// One Raft group's replica at a node, as the checks see it: the group's name, its Raft
/// handle, and its log.
type Member = (String, Raft, Arc<Replica>);

/// What a simulation's driver and its nodes share, whatever the nodes are.
struct Common {
    seed: u64,
    /// Where the nodes' directories are.
    root: PathBuf,
    /// Plants a bug: replicas report appends durable without syncing them.
    planted: bool,
    history: Arc<Mutex<History>>,
    /// The live nodes' file systems.
    fs: Mutex<BTreeMap<NodeId, FaultyFs>>,
    /// How many times each node has started.
    boots: Mutex<BTreeMap<NodeId, u64>>,
    /// Set when the producers are to stop (the final phase).
    quiet: AtomicBool,
}

impl Common {
    fn new(seed: u64, root: &Path, planted: bool) -> Common {
        Common {
            seed,
            root: root.to_path_buf(),
            planted,
            history: Arc::default(),
            fs: Mutex::default(),
            boots: Mutex::default(),
            quiet: AtomicBool::new(false),
        }
    }

    /// Node `me` starts (again): the number of this boot, and the file system it runs on
    /// until it crashes (small appends go through a map of the file, as they do on the real
    /// file system).
    fn boot(&self, me: NodeId) -> (u64, FaultyFs) {
        let boot = {
            let mut boots = self.boots.lock();
            let b = boots.entry(me).or_default();
            *b += 1;
            *b
        };
        let fs = FaultyFs::new();
        fs.map_appends();
        self.fs.lock().insert(me, fs.clone());
        (boot, fs)
    }

    fn boot_of(&self, node: NodeId) -> u64 {
        self.boots.lock().get(&node).copied().unwrap_or_default()
    }

    fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::SeqCst)
    }

    /// Where node `node`'s files go.
    fn dir(&self, node: NodeId) -> PathBuf {
        self.root.join(host(node))
    }

    /// The nodes' storage work: inline, and synced unless a bug is planted.
    fn io(&self) -> Io {
        Io::Inline { sync: !self.planted }
    }

    /// A random source for `who`, drawn from the seed.
    fn rng(&self, who: &impl Hash) -> SmallRng {
        SmallRng::seed_from_u64(mix(&(self.seed, who)))
    }
}

/// What a simulation's nodes are, for the driver that strikes them with faults and checks
/// them at every step.
trait Nodes {
    /// How many nodes there are (ids from 1).
    const COUNT: u64;
    fn common(&self) -> &Common;
    /// Drops what the simulation holds of `node`, which crashes.
    fn forget(&self, node: NodeId);
    /// Every live node's boot and the group replicas it runs.
    fn members(&self) -> BTreeMap<NodeId, (u64, Vec<Member>)>;
    /// Whether every node is up and holds the same committed log for every group, all of it
    /// applied.
    fn converged(&self) -> bool;
    /// The simulation's own work at a step of the faulty phase (retention, say).
    fn at_step(&self, _step: u64) {}
}

thread_local! {
    /// Panics on this thread (a simulation's nodes all run on it).
    static PANICS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts the panics of each thread, then reports them as before: a task that panics inside
/// a node is caught by its runtime, and would otherwise go unseen.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            report(info);
        }));
    });
}

/// Records a violation once (and at most 200 of them).
fn note(violations: &mut Vec<String>, violation: String) {
    if violations.len() < 200 && !violations.contains(&violation) {
        violations.push(violation);
    }
}

fn mix(x: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// A node's commit and apply points in one group, and how far its log's committed entries
/// have been checked.
type Progress = (Option<u64>, Option<u64>, u64);

/// What Raft promises, checked against what the nodes report at every step.
#[derive(Default)]
struct RaftChecks {
    /// (group, term) -> the node that led it.
    leaders: BTreeMap<(String, u64), NodeId>,
    /// (group, index) -> the term of the entry committed there.
    committed: BTreeMap<(String, u64), u64>,
    /// (node, boot, group) -> its committed and applied indexes, and how far its log's
    /// committed entries have been checked.
    progress: BTreeMap<(NodeId, u64, String), Progress>,
    /// A digest of what the nodes reported at each step, for replays to compare.
    trace: Vec<u64>,
    /// (node, group) -> its log's end at the last step; and how many times a log restarted
    /// past it (from a leader's snapshot).
    ends: BTreeMap<(NodeId, String), i64>,
    restarts: u64,
}

impl RaftChecks {
    /// Records that entry `index` of `group` is committed with `term` (as `who` says).
    fn committed(&mut self, group: &str, (index, term): (u64, u64), who: &str, violations: &mut Vec<String>) {
        let first = *self.committed.entry((group.to_string(), index)).or_insert(term);
        if first != term {
            note(
                violations,
                format!("{group}: entry {index} committed in term {first} and, {who}, in term {term}"),
            );
        }
    }

    fn check(&mut self, nodes: &impl Nodes, violations: &mut Vec<String>) {
        let acked = nodes.common().history.lock().acked.len();
        for (node, (boot, members)) in nodes.members() {
            for (group, raft, store) in members {
                let m = raft.metrics().borrow_watched().clone();
                let id = |l: Option<crate::cluster::raft::LogId>| l.map(|l| (term_of(&l), l.index));
                let reported = (
                    node,
                    &group,
                    format!("{:?}", m.state),
                    m.current_term,
                    id(m.local_committed),
                    id(m.last_applied),
                );
                self.trace.push(mix(&(reported, m.current_leader, acked)));
                if m.state == openraft::ServerState::Leader {
                    let led = self
                        .leaders
                        .entry((group.clone(), m.current_term))
                        .or_insert(node);
                    if *led != node {
                        note(
                            violations,
                            format!("{group}: nodes {led} and {node} both led term {}", m.current_term),
                        );
                    }
                }
                let who = format!("at node {node}");
                for id in [m.local_committed, m.last_applied].into_iter().flatten() {
                    self.committed(&group, (id.index, term_of(&id)), &who, violations);
                }
                // Within a boot, the commit and apply points only move on; every entry up to
                // the commit point, as this node's log holds it, is the committed one.
                let committed = m.local_committed.map(|l| l.index);
                let applied = m.last_applied.map(|l| l.index);
                let key = (node, boot, group.clone());
                let (last_committed, last_applied, checked) =
                    self.progress.get(&key).copied().unwrap_or_default();
                if committed < last_committed || applied < last_applied {
                    note(
                        violations,
                        format!("{group}: node {node}'s commit or apply point went back"),
                    );
                }
                let mut upto = checked;
                if let Some(c) = committed {
                    let terms: Vec<(u64, Option<u64>)> = {
                        let index = store.index.read();
                        (checked + 1..=c).map(|i| (i, index.term_of(i))).collect()
                    };
                    let who = format!("in node {node}'s log");
                    for (i, term) in terms {
                        if let Some(term) = term {
                            self.committed(&group, (i, term), &who, violations);
                        }
                        upto = i;
                    }
                }
                self.progress.insert(key, (committed, applied, upto));
                let end = store.log.log_end_offset();
                let before = self.ends.insert((node, group), end);
                if before.is_some_and(|e| store.log.log_start_offset() > e) {
                    self.restarts += 1;
                }
            }
        }
    }
}

/// The faults a run injected: node crashes (a power cut to every node counts each), crashes
/// in the middle of storage work among them, and links cut or held.
#[derive(Debug, Default)]
struct Struck {
    crashes: u64,
    io_crashes: u64,
    links: u64,
}

/// Turmoil's simulation for `seed`: 1 ms steps, 0.2 to 5 ms per message.
fn build_sim<'a>(seed: u64, seconds: u64) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(seconds + 120))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(200))
        .max_message_latency(Duration::from_millis(5))
        .rng_seed(seed)
        .build()
}

/// A directory for the nodes' files: in memory where the machine has one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a directory")
}

/// Crashes node `me`: cuts every file back to what it synced, keeping a torn part of the
/// rest now and then (decided by the seed and the file). Nothing it sends while it goes
/// down reaches the network (a machine that loses power sends no FIN): its links are cut
/// meanwhile and whole again after, whatever faults they had. (This also keeps runs
/// repeatable: the runtime drops the node's tasks in an order that depends on tokio's task
/// ids, which other tests in the process share.)
fn crash<N: Nodes>(
    nodes: &N,
    sim: &mut turmoil::Sim<'_>,
    me: NodeId,
    cut: &mut BTreeMap<(NodeId, NodeId), u64>,
) {
    let others: Vec<NodeId> = (1..=N::COUNT).filter(|&n| n != me).collect();
    for &o in &others {
        sim.partition(host(me), host(o));
    }
    nodes.forget(me);
    let common = nodes.common();
    if let Some(fs) = common.fs.lock().remove(&me) {
        let (root, seed) = (&common.root, common.seed);
        fs.crash(|path, synced, written| {
            let name = path.strip_prefix(root).unwrap_or(path).to_path_buf();
            let h = mix(&(seed, name, synced, written));
            if h.is_multiple_of(3) {
                h % (written - synced + 1)
            } else {
                0
            }
        })
        .expect("the crash image");
    }
    sim.crash(host(me));
    for o in others {
        sim.repair(host(me), host(o));
        sim.release(host(me), host(o));
        cut.remove(&(me, o));
        cut.remove(&(o, me));
    }
}

/// What the driver saw.
struct Driven {
    violations: Vec<String>,
    struck: Struck,
    checks: RaftChecks,
}

/// Runs `sim` for `seconds` of faults drawn from the nodes' seed, checking Raft at every
/// step; then heals every fault, stops the producers and lets the nodes converge (a
/// violation if they do not within 30 s) and the consumers catch up.
fn drive<N: Nodes>(sim: &mut turmoil::Sim<'_>, nodes: &N, seconds: u64) -> Driven {
    let mut rng = SmallRng::seed_from_u64(nodes.common().seed);
    let mut violations = Vec::new();
    let mut checks = RaftChecks::default();
    let mut struck = Struck::default();
    let mut down: BTreeMap<NodeId, u64> = BTreeMap::new(); // node -> step it restarts at
    let mut cut: BTreeMap<(NodeId, NodeId), u64> = BTreeMap::new(); // link -> step it heals at
    let fault_steps = seconds * 1000;
    count_panics();
    let panics_before = PANICS.with(|p| p.get());
    let mut run = |sim: &mut turmoil::Sim<'_>, violations: &mut Vec<String>| {
        if let Err(e) = sim.step() {
            note(violations, format!("a node failed: {e}"));
        }
        if PANICS.with(|p| p.get()) != panics_before {
            note(violations, "a node's task panicked".into());
        }
        checks.check(nodes, violations);
    };
    let count = N::COUNT;
    for step in 0..fault_steps {
        nodes.at_step(step);
        // Every 200 ms of simulated time, perhaps a fault.
        if step.is_multiple_of(200) && step > 2000 {
            // The link a link fault would strike.
            let a = rng.random_range(1..=count);
            let b = (a % count) + 1;
            match rng.random_range(0..100) {
                // One node crashes, if all are up.
                0..12 if down.is_empty() => {
                    let n = rng.random_range(1..=count);
                    crash(nodes, sim, n, &mut cut);
                    struck.crashes += 1;
                    down.insert(n, step + rng.random_range(300..3000));
                }
                // Every node loses power at once.
                12..15 if down.is_empty() => {
                    for n in 1..=count {
                        crash(nodes, sim, n, &mut cut);
                        struck.crashes += 1;
                        down.insert(n, step + rng.random_range(200..1500));
                    }
                }
                // One node crashes in the middle of its storage work: at one of its next
                // writes, syncs or renames (noticed below).
                15..22 if down.is_empty() => {
                    let n = rng.random_range(1..=count);
                    if let Some(fs) = nodes.common().fs.lock().get(&n) {
                        fs.crash_after_ops(rng.random_range(0..40));
                    }
                }
                // A link fails, both ways or one way (a link already faulty is left as it is).
                22..34 if !cut.contains_key(&(a, b)) => {
                    if rng.random_bool(0.5) {
                        sim.partition(host(a), host(b));
                    } else {
                        sim.partition_oneway(host(a), host(b));
                    }
                    cut.insert((a, b), step + rng.random_range(200..4000));
                    struck.links += 1;
                }
                // A link holds its messages for a while (a long delay).
                34..40 if !cut.contains_key(&(a, b)) => {
                    sim.hold(host(a), host(b));
                    cut.insert((a, b), step + rng.random_range(100..1500));
                    struck.links += 1;
                }
                _ => {}
            }
        }
        for n in crashed(nodes) {
            crash(nodes, sim, n, &mut cut);
            struck.crashes += 1;
            struck.io_crashes += 1;
            down.insert(n, step + rng.random_range(300..3000));
        }
        let due: Vec<NodeId> = down
            .iter()
            .filter(|(_, at)| **at <= step)
            .map(|(n, _)| *n)
            .collect();
        for n in due {
            down.remove(&n);
            sim.bounce(host(n));
        }
        let healed: Vec<(NodeId, NodeId)> = cut
            .iter()
            .filter(|(_, at)| **at <= step)
            .map(|(l, _)| *l)
            .collect();
        for (a, b) in healed {
            cut.remove(&(a, b));
            sim.repair(host(a), host(b));
            sim.release(host(a), host(b));
        }
        run(sim, &mut violations);
    }
    // Heal: no fault armed, every node up, every link whole, producers stopped; then the
    // nodes catch up.
    for fs in nodes.common().fs.lock().values() {
        fs.clear_faults();
    }
    for n in crashed(nodes) {
        crash(nodes, sim, n, &mut cut);
        down.insert(n, 0);
    }
    for (n, _) in std::mem::take(&mut down) {
        sim.bounce(host(n));
    }
    for ((a, b), _) in std::mem::take(&mut cut) {
        sim.repair(host(a), host(b));
        sim.release(host(a), host(b));
    }
    nodes.common().quiet.store(true, Ordering::SeqCst);
    let mut settled = false;
    for i in 0..30_000u64 {
        run(sim, &mut violations);
        if i.is_multiple_of(100) && i >= 2000 && nodes.converged() {
            settled = true;
            break;
        }
    }
    if settled {
        // The consumers catch up.
        for _ in 0..300 {
            run(sim, &mut violations);
        }
    } else {
        violations.push("the nodes did not converge within 30 s of healing".into());
    }
    Driven {
        violations,
        struck,
        checks,
    }
}

/// The live nodes whose file system crashed (a crash in the middle of storage work).
fn crashed(nodes: &impl Nodes) -> Vec<NodeId> {
    nodes
        .common()
        .fs
        .lock()
        .iter()
        .filter(|(_, fs)| fs.crashed())
        .map(|(n, _)| *n)
        .collect()
}

/// Whether the replicas of each group hold the same committed log, all of it applied (a
/// node that runs none of a group's replicas does not count).
fn same_logs(members: &BTreeMap<NodeId, (u64, Vec<Member>)>) -> bool {
    let mut ends: BTreeMap<&str, BTreeSet<(i64, i64)>> = BTreeMap::new();
    for (_, members) in members.values() {
        for (group, _, store) in members {
            ends.entry(group)
                .or_default()
                .insert((store.log.high_watermark(), store.log.log_end_offset()));
        }
    }
    ends.values()
        .all(|e| e.len() == 1 && e.iter().all(|(hw, end)| hw == end))
}

/// The history checker: the final logs of a topic's partitions (`replicas`: every node's
/// replica of each) against what was acknowledged and polled. `boots` says which consumers
/// are the nodes' current ones (they must have read to the end). Returns a digest of the
/// final logs.
fn check_history(
    replicas: &BTreeMap<NodeId, Vec<Arc<Replica>>>,
    boots: &BTreeMap<NodeId, u64>,
    history: &History,
    violations: &mut Vec<String>,
) -> u64 {
    let mut digest = DefaultHasher::new();
    let mut finals: Vec<BTreeMap<i64, Vec<u8>>> = Vec::new();
    let mut starts: Vec<i64> = Vec::new();
    let Some(first) = replicas.values().next() else {
        violations.push("no node is up at the end".into());
        return 0;
    };
    for p in 0..first.len() {
        let end = first[p].log.high_watermark();
        // What every replica still holds (retention trims them each on its own).
        let start = replicas
            .values()
            .map(|r| r[p].log.log_start_offset())
            .max()
            .unwrap_or_default();
        starts.push(start);
        let bytes = bytes_between(&first[p], start, end);
        for (node, r) in replicas.iter() {
            if bytes_between(&r[p], start, end) != bytes {
                violations.push(format!(
                    "partition {p}: node {node}'s log differs from the others'"
                ));
            }
        }
        let records: Vec<(i64, Vec<u8>)> = records_of(&first[p])
            .into_iter()
            .filter(|(offset, _)| *offset >= start)
            .collect();
        // Records, not bytes: a leader's first batch carries the wall clock's time.
        records.hash(&mut digest);
        let mut by_offset = BTreeMap::new();
        let mut offsets_of: BTreeMap<&[u8], i64> = BTreeMap::new();
        for (offset, value) in &records {
            if let Some(other) = offsets_of.insert(value, *offset) {
                violations.push(format!(
                    "partition {p}: value {} at offsets {other} and {offset}",
                    String::from_utf8_lossy(value)
                ));
            }
            by_offset.insert(*offset, value.clone());
        }
        finals.push(by_offset);
    }
    for a in history.acked.iter() {
        let p = a.partition as usize;
        if a.offset < starts[p] {
            continue;
        }
        let held = finals[p].get(&a.offset);
        if held != Some(&a.value) {
            violations.push(format!(
                "partition {}: {} was acknowledged at offset {}, which holds {:?}",
                a.partition,
                String::from_utf8_lossy(&a.value),
                a.offset,
                held.map(|v| String::from_utf8_lossy(v).into_owned())
            ));
        }
    }
    let mut sessions: BTreeMap<Session, Vec<&Polled>> = BTreeMap::new();
    for polled in &history.polled {
        sessions.entry(polled.session).or_default().push(polled);
    }
    // Every node's current consumers have read to the end.
    for (&node, &boot) in boots {
        for (p, final_log) in finals.iter().enumerate() {
            let last = final_log.keys().next_back();
            let read = sessions
                .range((node, boot, p as i32, 0)..=(node, boot, p as i32, u32::MAX))
                .next_back()
                .and_then(|(_, polls)| polls.last())
                .map(|polled| polled.offset);
            if last.is_some() && read.as_ref() != last {
                violations.push(format!(
                    "node {node}'s consumer of partition {p} stopped at {read:?}, before {last:?}"
                ));
            }
        }
    }
    for (session, polls) in sessions {
        let final_log = &finals[session.2 as usize];
        for pair in polls.windows(2) {
            let (a, b) = (pair[0].offset, pair[1].offset);
            if b <= a {
                violations.push(format!("consumer {session:?} went back from offset {a} to {b}"));
            } else if let Some((skipped, _)) = final_log.range(a + 1..b).next() {
                violations.push(format!(
                    "consumer {session:?} skipped offset {skipped} (read {a}, then {b})"
                ));
            }
        }
        // A session reads from where it began (the log start then): nothing between.
        let began = history.began.get(&session).copied().unwrap_or_default();
        if let Some(first) = polls.first()
            && let Some((skipped, _)) = final_log.range(began..first.offset).next()
        {
            violations.push(format!(
                "consumer {session:?} began at offset {} past {skipped}",
                first.offset
            ));
        }
        let start = starts[session.2 as usize];
        for polled in polls.iter().filter(|p| p.offset >= start) {
            if final_log.get(&polled.offset) != Some(&polled.value) {
                violations.push(format!(
                    "consumer {session:?} read {} at offset {}, which the log does not hold there",
                    String::from_utf8_lossy(&polled.value),
                    polled.offset
                ));
            }
        }
    }
    digest.finish()
}

/// Reads committed records of `log` as a consumer polls, every 25 ms from `next` on, into
/// the history, in `session`; when its position falls below the log start, it starts over
/// there, in a new session. `log` gives the log to read (none yet: it waits).
async fn consume(
    history: Arc<Mutex<History>>,
    log: impl Fn() -> Option<crate::storage::PartitionLog>,
    mut session: Session,
) {
    let mut next = None;
    loop {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let Some(log) = log() else { continue };
        let at = *next.get_or_insert_with(|| {
            let start = log.log_start_offset();
            history.lock().began.insert(session, start);
            start
        });
        let fetch = match log.read(at, 64 << 10) {
            Ok(fetch) => fetch,
            Err(crate::Error::OffsetOutOfRange { log_start, .. }) if at < log_start => {
                next = Some(log_start);
                session.3 += 1;
                history.lock().began.insert(session, log_start);
                continue;
            }
            Err(_) => continue,
        };
        if fetch.is_empty() {
            continue;
        }
        let mut read = Vec::new();
        next = Some(crate::cluster::tests::records_in(&fetch, &mut read));
        history
            .lock()
            .polled
            .extend(read.into_iter().map(|(offset, value)| Polled {
                session,
                offset,
                value,
            }));
    }
}

/// `n` records for partition `p` from producer `(me, boot)`, numbered on from `seq`.
fn batch_of(
    n: u64,
    (me, boot, p): (NodeId, u64, i32),
    seq: &mut u64,
) -> (crate::storage::RecordBatch, Vec<Vec<u8>>) {
    let mut b = crate::storage::BatchBuilder::new(crate::storage::Compression::None);
    let mut values = Vec::new();
    for _ in 0..n {
        let value = format!("p{p}-n{me}-b{boot}-{seq}").into_bytes();
        *seq += 1;
        b.push(1_700_000_000_000, None, Some(&value), &[]);
        values.push(value);
    }
    (b.finish().expect("a batch"), values)
}

/// Records in the history what a proposal of `values` to partition `p` came to.
fn record_outcome(history: &Mutex<History>, p: i32, values: Vec<Vec<u8>>, outcome: Option<i64>) {
    let mut h = history.lock();
    match outcome {
        Some(base) => {
            for (i, value) in values.into_iter().enumerate() {
                h.acked.push(Acked {
                    partition: p,
                    offset: base + i as i64,
                    value,
                });
            }
        }
        None => h.unknown += 1,
    }
}

/// The seeds to run: `SEEDS` (`1-200`, or `7,9`), else `fixed`.
fn seeds(fixed: &[u64]) -> Vec<u64> {
    let Ok(spec) = std::env::var("SEEDS") else {
        return fixed.to_vec();
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<u64>().expect("a seed")..=b.parse::<u64>().expect("a seed")),
            None => out.push(part.parse().expect("a seed")),
        }
    }
    out
}

/// Seconds of faults: `SIM_SECONDS`, else 20.
fn seconds() -> u64 {
    std::env::var("SIM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// Seeds openraft's draws on this thread for a run, and unseeds them when dropped.
struct Seeded;

impl Seeded {
    fn new(seed: u64) -> Seeded {
        seed_this_thread(Some(seed));
        Seeded
    }
}

impl Drop for Seeded {
    fn drop(&mut self) {
        seed_this_thread(None);
    }
}

/// What a run came to.
struct Run {
    violations: Vec<String>,
    struck: Struck,
    acked: usize,
    polled: usize,
    unknown: u64,
    /// A digest of the final logs, to show a seed replays the same run.
    digest: u64,
    trace: Vec<u64>,
}

impl Run {
    /// The run `driven` made, with its `history` checked (see [`check_history`]) against
    /// `replicas`, every node's replica of each partition the producers wrote; and
    /// `checked` too, what the simulation checks of its own.
    fn new<N: Nodes>(
        nodes: &N,
        mut driven: Driven,
        replicas: &BTreeMap<NodeId, Vec<Arc<Replica>>>,
        checked: impl FnOnce(&mut Vec<String>),
    ) -> Run {
        let common = nodes.common();
        let history = std::mem::take(&mut *common.history.lock());
        let boots = common.boots.lock().clone();
        let digest = check_history(replicas, &boots, &history, &mut driven.violations);
        checked(&mut driven.violations);
        Run {
            violations: driven.violations,
            struck: driven.struck,
            acked: history.acked.len(),
            polled: history.polled.len(),
            unknown: history.unknown,
            digest,
            trace: driven.checks.trace,
        }
    }

    /// Fails the test unless the run with `seed` acknowledged records and broke no rule.
    fn assert_clean(&self, seed: u64) {
        assert!(
            self.acked > 100,
            "seed {seed}: only {} records acknowledged",
            self.acked
        );
        assert!(
            self.violations.is_empty(),
            "seed {seed} (rerun with SEEDS={seed}): {:#?}",
            &self.violations[..self.violations.len().min(20)]
        );
    }

    /// What the run struck and saw, in a line.
    fn summary(&self) -> String {
        format!(
            "{:?}; {} acknowledged, {} polled, {} unknown outcomes, {} violations",
            self.struck,
            self.acked,
            self.polled,
            self.unknown,
            self.violations.len()
        )
    }

    /// Whether the checker found an acknowledged record lost or moved.
    fn lost_acknowledged(&self) -> bool {
        self.violations
            .iter()
            .any(|v| v.contains("was acknowledged at offset"))
    }
}

/// Fails the test unless two runs of one seed went the same way: the same reports at every
/// step, the same records acknowledged and polled, the same final logs.
fn assert_replays(a: &Run, b: &Run) {
    assert!(
        a.violations.is_empty() && b.violations.is_empty(),
        "{:?} {:?}",
        a.violations,
        b.violations
    );
    let diverged = (0..a.trace.len().min(b.trace.len())).find(|&i| a.trace[i] != b.trace[i]);
    assert_eq!(diverged, None, "the runs diverged at the {diverged:?}th report");
    assert_eq!(a.trace.len(), b.trace.len());
    assert_eq!(
        (a.acked, a.polled, a.unknown, a.digest),
        (b.acked, b.polled, b.unknown, b.digest)
    );
}
