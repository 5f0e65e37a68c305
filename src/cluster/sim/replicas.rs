//! Three nodes' partition replicas alone: their logs on real files, their Raft groups and
//! the peer link, without the rest of a node.
//!
//! Three nodes hold two partitions. On every node, producers append batches through the
//! node's own replica (appends at a follower go to the leader over the peer link) and
//! consumers read what is committed. The second partition keeps little (small segments,
//! `retention.bytes` of one segment, applied twice a simulated second): its replicas snapshot
//! and purge their logs, and a replica that was down while its leader purged restarts its
//! log from the leader's snapshot; its consumers that fall below the log start start over
//! at it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use rand::rngs::SmallRng;

use super::{
    Common, Member, Nodes, PEER_PORT, Run, Seeded, SimListener, SimNet, assert_replays, batch_of, build_sim,
    consume, drive, host, record_outcome, same_logs, scratch, seconds, seeds,
};
use crate::cluster::log_store::Replica;
use crate::cluster::partition::PartitionReplica;
use crate::cluster::peer::{self, GroupId, Groups, Raft, Router};
use crate::cluster::raft::{Node, NodeId};
use crate::config::{Fsync, LogConfig};
use crate::storage::PartitionLog;

const NODES: u64 = 3;
const PARTITIONS: i32 = 2;
/// The partition retention trims.
const RETAINED: i32 = 1;
/// Seeds run by default (CI): a few minutes in all.
const FIXED_SEEDS: [u64; 7] = [1, 2, 3, 4, 5, 6, 20];

fn group(partition: i32) -> GroupId {
    GroupId {
        topic: "t".into(),
        partition,
        incarnation: 0,
    }
}

/// What the driver and the nodes share.
struct World {
    common: Common,
    /// The live nodes' Raft groups and replicas, by node.
    rafts: Mutex<BTreeMap<NodeId, Vec<Raft>>>,
    replicas: Mutex<BTreeMap<NodeId, Vec<Arc<Replica>>>>,
}

impl Nodes for World {
    const COUNT: u64 = NODES;

    fn common(&self) -> &Common {
        &self.common
    }

    fn forget(&self, node: NodeId) {
        self.rafts.lock().remove(&node);
        self.replicas.lock().remove(&node);
    }

    fn members(&self) -> BTreeMap<NodeId, (u64, Vec<Member>)> {
        let rafts = self.rafts.lock().clone();
        let replicas = self.replicas.lock().clone();
        rafts
            .into_iter()
            .filter_map(|(node, rafts)| {
                let stores = replicas.get(&node)?;
                let members = rafts
                    .into_iter()
                    .zip(stores.iter().cloned())
                    .enumerate()
                    .map(|(p, (raft, store))| (format!("partition {p}"), raft, store))
                    .collect();
                Some((node, (self.common.boot_of(node), members)))
            })
            .collect()
    }

    fn converged(&self) -> bool {
        let members = self.members();
        members.len() == NODES as usize && same_logs(&members)
    }

    /// Twice a simulated second, retention on every node.
    fn at_step(&self, step: u64) {
        if step.is_multiple_of(500) && step > 2000 {
            let replicas = self.replicas.lock().clone();
            for r in replicas.values() {
                let _ = r[RETAINED as usize]
                    .log
                    .enforce_retention(crate::storage::now_ms());
            }
        }
    }
}

/// Starts node `me`: its replicas, its peer server, its producers and consumers. Runs until
/// the node crashes.
async fn boot(world: Arc<World>, me: NodeId) -> turmoil::Result {
    let (boot, fs) = world.common.boot(me);
    let router = Router::with_transport(me, Arc::new(SimNet));
    for n in 1..=NODES {
        router.set_peer(n, SocketAddr::new(turmoil::lookup(host(n)), PEER_PORT));
    }
    let groups = Arc::new(Groups::default());
    let listener = turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PEER_PORT)).await?;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(peer::serve(
        me,
        SimListener(listener),
        groups.clone(),
        router.clone(),
        stopped,
    ));
    let io = world.common.io();
    let mut replicas = Vec::new();
    for p in 0..PARTITIONS {
        let dir = world.common.dir(me).join(format!("t-{p}"));
        // Retention only when the simulation applies it (no housekeeper's round on a clock
        // of its own), and for the second partition only.
        let config = LogConfig {
            fsync: Fsync::Always,
            segment_bytes: if p == RETAINED { 4 << 10 } else { 16 << 10 },
            retention_ms: None,
            retention_bytes: (p == RETAINED).then_some(4 << 10),
            retention_check_interval: Duration::from_secs(1 << 20),
            ..LogConfig::default()
        };
        let log = PartitionLog::builder(&dir)
            .config(config)
            .fs(Arc::new(fs.clone()))
            .replicated()
            .open()?;
        let config = crate::cluster::partition::raft_config(&crate::cluster::Timing::default())?;
        let replica = PartitionReplica::start(me, log, router.clone(), group(p), None, (io, config)).await?;
        groups.insert(group(p), replica.raft.clone());
        if !replica.raft.is_initialized().await? {
            let members: BTreeMap<NodeId, Node> = (1..=NODES).map(|n| (n, Node::default())).collect();
            // Every founder proposes the same membership; the others' attempts are refused.
            let _ = replica.raft.initialize(members).await;
        }
        replicas.push(Arc::new(replica));
    }
    world
        .rafts
        .lock()
        .insert(me, replicas.iter().map(|r| r.raft.clone()).collect());
    world
        .replicas
        .lock()
        .insert(me, replicas.iter().map(|r| r.replica.clone()).collect());
    for (p, replica) in replicas.iter().enumerate() {
        let rng = world.common.rng(&(me, boot, p));
        tokio::spawn(produce(world.clone(), replica.clone(), (me, boot, p as i32), rng));
        let log = replica.replica.log.clone();
        tokio::spawn(consume(
            world.common.history.clone(),
            move || Some(log.clone()),
            (me, boot, p as i32, 0),
        ));
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// Appends batches of one to three records at random pauses until the run turns quiet.
async fn produce(
    world: Arc<World>,
    replica: Arc<PartitionReplica>,
    who: (NodeId, u64, i32),
    mut rng: SmallRng,
) {
    let mut seq = 0u64;
    while !world.common.is_quiet() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
        let (batch, values) = batch_of(rng.random_range(1..=3), who, &mut seq);
        let outcome = replica.propose(batch).await.ok().map(|a| a.base_offset);
        record_outcome(&world.common.history, who.2, values, outcome);
    }
}

struct Outcome {
    run: Run,
    /// Logs restarted from a leader's snapshot, and the retained partition's final start.
    restarts: u64,
    retained_from: i64,
}

/// Runs the simulation with `seed` for `seconds` of faults.
fn simulate(seed: u64, seconds: u64, planted: bool) -> Outcome {
    let dir = scratch();
    let world = Arc::new(World {
        common: Common::new(seed, dir.path(), planted),
        rafts: Mutex::default(),
        replicas: Mutex::default(),
    });
    let seeded = Seeded::new(seed);
    let mut sim = build_sim(seed, seconds);
    for n in 1..=NODES {
        let w = world.clone();
        sim.host(host(n), move || boot(w.clone(), n));
    }
    let driven = drive(&mut sim, &*world, seconds);
    let restarts = driven.checks.restarts;
    let replicas = world.replicas.lock().clone();
    let run = Run::new(&*world, driven, &replicas, |_| {});
    let retained_from = replicas
        .values()
        .map(|r| r[RETAINED as usize].log.log_start_offset())
        .min()
        .unwrap_or_default();
    drop(seeded);
    drop(sim);
    Outcome {
        run,
        restarts,
        retained_from,
    }
}

/// Under crashes, partitions and held messages, no acknowledged record is lost or moved, no
/// offset holds two values, and no consumer skips or goes back, for every seed.
#[test]
fn simulated_faults_lose_no_acknowledged_record() {
    for seed in seeds(&FIXED_SEEDS) {
        let Outcome {
            run,
            restarts,
            retained_from,
        } = simulate(seed, seconds(), false);
        eprintln!(
            "seed {seed}: {restarts} logs restarted from a snapshot, retained from {retained_from}; {}",
            run.summary()
        );
        run.assert_clean(seed);
    }
}

/// A seed replays the same run: the same records acknowledged, the same final logs.
#[test]
fn a_seed_replays_the_same_run() {
    assert_replays(&simulate(11, 5, false).run, &simulate(11, 5, false).run);
}

/// The checker catches a planted bug: replicas that acknowledge appends without syncing them
/// lose acknowledged records when every node loses power.
#[test]
fn the_checker_catches_acknowledgements_before_sync() {
    let caught = (1..=3).any(|seed| {
        let out = simulate(seed, 20, true).run;
        eprintln!("planted, seed {seed}: {:?}", out.violations.first());
        out.lost_acknowledged()
    });
    assert!(caught, "no seed's checker saw the lost acknowledged records");
}
