//! Three whole nodes: each a [`Cluster`] started from its voters list as the example broker
//! starts one (its broker on the simulation's faulty file system, its controller, its
//! partition groups and the offsets topic), over the simulated network.
//!
//! Every node asks the controller to create the data topic (one creation wins, the others
//! are told it exists), and later one more topic of its own, in the middle of the faults;
//! its producers append to the data topic's partitions through its replicas (to whichever
//! node leads), and its consumers read what its broker's partitions have committed. After
//! the history's checks, the nodes must agree on the controller's state (the topics, where
//! their replicas are, the nodes), hold every topic whose creation was acknowledged, and
//! hold identical logs in every group, the controller's included.

use std::collections::{BTreeMap, BTreeSet};
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
use crate::cluster::controller::Controller;
use crate::cluster::log_store::Replica;
use crate::cluster::peer::{GroupId, Listener};
use crate::cluster::raft::NodeId;
use crate::cluster::tests::bytes_between;
use crate::cluster::{Cluster, ClusterBuilder, Seams};
use crate::config::{LogConfig, TopicConfig};
use crate::group::OFFSETS_TOPIC;

const NODES: u64 = 3;
/// The topic the producers write.
const TOPIC: &str = "t";
const PARTITIONS: u32 = 2;
/// Seeds run by default (CI).
const FIXED_SEEDS: [u64; 3] = [1, 2, 3];

/// What the driver and the nodes share.
struct World {
    common: Common,
    /// The live nodes.
    clusters: Mutex<BTreeMap<NodeId, Cluster>>,
    /// The topics whose creation a node was told succeeded.
    created: Mutex<BTreeSet<String>>,
    /// How long the faults last.
    seconds: u64,
}

fn name_of(group: &GroupId) -> String {
    if group.topic.is_empty() {
        "the controller".into()
    } else {
        format!("{}-{} ({})", group.topic, group.partition, group.incarnation)
    }
}

impl Nodes for World {
    const COUNT: u64 = NODES;

    fn common(&self) -> &Common {
        &self.common
    }

    fn forget(&self, node: NodeId) {
        self.clusters.lock().remove(&node);
    }

    fn members(&self) -> BTreeMap<NodeId, (u64, Vec<Member>)> {
        let clusters = self.clusters.lock().clone();
        clusters
            .into_iter()
            .map(|(node, cluster)| {
                let members = cluster
                    .inner
                    .controller
                    .members()
                    .into_iter()
                    .map(|(group, raft, store)| (name_of(&group), raft, store))
                    .collect();
                (node, (self.common.boot_of(node), members))
            })
            .collect()
    }

    /// Every node up, running the same groups (every topic has a replica on every node), with
    /// the same logs.
    fn converged(&self) -> bool {
        let members = self.members();
        let groups: BTreeSet<Vec<&str>> = members
            .values()
            .map(|(_, m)| m.iter().map(|(g, _, _)| g.as_str()).collect())
            .collect();
        members.len() == NODES as usize && groups.len() == 1 && same_logs(&members)
    }
}

/// Starts node `me` as a [`Cluster`], then its workload. Runs until the node crashes.
async fn boot(world: Arc<World>, me: NodeId) -> turmoil::Result {
    let (boot, fs) = world.common.boot(me);
    let voters: Vec<(u64, SocketAddr)> = (1..=NODES)
        .map(|n| (n, SocketAddr::new(turmoil::lookup(host(n)), PEER_PORT)))
        .collect();
    let seams = Seams {
        transport: Arc::new(SimNet),
        bind: Box::new(|addr| {
            Box::pin(async move {
                let listener = turmoil::net::TcpListener::bind(addr).await?;
                Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
            })
        }),
        io: world.common.io(),
    };
    let on_fs = fs.clone();
    let started = ClusterBuilder::new(me, world.common.dir(me))
        .voters(voters)
        .peer_listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PEER_PORT))
        .broker(move |b| b.fs(Arc::new(on_fs)))
        .start_on(tokio::runtime::Handle::current(), seams)
        .await;
    let cluster = match started {
        Ok(cluster) => cluster,
        // The machine crashed while the node started: the driver takes it down.
        Err(_) if fs.crashed() => return std::future::pending().await,
        Err(e) => return Err(e.into()),
    };
    world.clusters.lock().insert(me, cluster.clone());
    let controller = cluster.inner.controller.clone();
    let rng = world.common.rng(&(me, boot));
    tokio::spawn(make_topics(world.clone(), controller.clone(), (me, boot), rng));
    for p in 0..PARTITIONS {
        let rng = world.common.rng(&(me, boot, p));
        tokio::spawn(produce(
            world.clone(),
            controller.clone(),
            (me, boot, p as i32),
            rng,
        ));
        let broker = cluster.broker().clone();
        tokio::spawn(consume(
            world.common.history.clone(),
            move || broker.partition(TOPIC, p).ok(),
            (me, boot, p as i32, 0),
        ));
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// The topics' settings: no retention (the records' timestamps are fixed, long past, and
/// the housekeeper's rounds run on the wall clock, outside the simulation).
fn data_topic() -> TopicConfig {
    TopicConfig::default().with_log(LogConfig::default().retention_ms(None))
}

/// Has the controller create the data topic (every node asks; one creation wins), then, at
/// a random moment, one more topic of this boot's own.
async fn make_topics(
    world: Arc<World>,
    controller: Arc<Controller>,
    (me, boot): (NodeId, u64),
    mut rng: SmallRng,
) {
    while !controller.topics().iter().any(|t| t == TOPIC) {
        match controller.create_topic(TOPIC, PARTITIONS, data_topic()).await {
            Ok(()) | Err(crate::Error::TopicExists { .. }) => break,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // Within the first three quarters of the faults (a node that boots late may miss them).
    let within = (world.seconds * 750).max(1001);
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..within))).await;
    if world.common.is_quiet() {
        return;
    }
    let name = format!("x-{me}-{boot}");
    if controller.create_topic(&name, 1, data_topic()).await.is_ok() {
        world.created.lock().insert(name);
    }
}

/// Appends batches of one to three records to partition `p` of the data topic at random
/// pauses, once this node runs its replica, until the run turns quiet.
async fn produce(world: Arc<World>, controller: Arc<Controller>, who: (NodeId, u64, i32), mut rng: SmallRng) {
    let mut seq = 0u64;
    while !world.common.is_quiet() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
        if controller.group_of(TOPIC, who.2 as u32).is_none() {
            continue;
        }
        let (batch, values) = batch_of(rng.random_range(1..=3), who, &mut seq);
        let outcome = controller.propose(TOPIC, who.2 as u32, batch).await;
        record_outcome(
            &world.common.history,
            who.2,
            values,
            outcome.ok().map(|a| a.base_offset),
        );
    }
}

/// A topic as a node sees it: its name, its first partition's group (which names its
/// incarnation), the nodes holding each partition, and how many partitions its broker made.
type TopicView = (String, Option<GroupId>, Vec<Vec<NodeId>>, Option<u32>);

/// What every node must agree on at the end: its controller's state, the topics its broker
/// holds, and its groups' logs.
fn check_agreement(world: &World, violations: &mut Vec<String>) {
    let clusters = world.clusters.lock().clone();
    let created = world.created.lock().clone();
    let mut views = BTreeMap::new();
    for (&node, cluster) in &clusters {
        let c = &cluster.inner.controller;
        let mut topics = c.topics();
        topics.sort();
        let view: Vec<TopicView> = topics
            .iter()
            .map(|t| {
                let replicas = (0..).map_while(|p| c.assignment(t, p)).collect();
                let made = cluster.broker().partition_count(t).ok();
                (t.clone(), c.group_of(t, 0), replicas, made)
            })
            .collect();
        for (t, _, replicas, made) in &view {
            if made != &Some(replicas.len() as u32) {
                violations.push(format!(
                    "node {node}: the controller assigned {} partitions of {t}, the broker made {made:?}",
                    replicas.len()
                ));
            }
        }
        for t in created.iter().map(String::as_str).chain([TOPIC, OFFSETS_TOPIC]) {
            if !topics.iter().any(|have| have == t) {
                violations.push(format!("node {node} lacks topic {t}"));
            }
        }
        let nodes: Vec<NodeId> = c.nodes().iter().map(|n| n.id).collect();
        if nodes != (1..=NODES).collect::<Vec<_>>() {
            violations.push(format!("node {node} knows nodes {nodes:?}"));
        }
        views.insert(node, view);
    }
    if views.values().collect::<BTreeSet<_>>().len() > 1 {
        violations.push(format!("the nodes' controllers disagree: {views:#?}"));
    }
    // Every group's replicas hold the same bytes (from the latest log start among them).
    let mut logs: BTreeMap<String, Vec<(NodeId, Arc<Replica>)>> = BTreeMap::new();
    for (node, (_, members)) in world.members() {
        for (group, _, store) in members {
            logs.entry(group).or_default().push((node, store));
        }
    }
    for (group, stores) in logs {
        let start = stores
            .iter()
            .map(|(_, s)| s.log.log_start_offset())
            .max()
            .unwrap_or_default();
        let end = stores
            .iter()
            .map(|(_, s)| s.log.high_watermark())
            .min()
            .unwrap_or_default();
        let (first, bytes) = (stores[0].0, bytes_between(&stores[0].1, start, end));
        for (node, store) in &stores[1..] {
            if bytes_between(store, start, end) != bytes {
                violations.push(format!("{group}: node {node}'s log differs from node {first}'s"));
            }
        }
    }
}

struct Outcome {
    run: Run,
    /// Topics created during the faults.
    topics: usize,
}

/// Every node's replica of each partition of the data topic (a violation for a node that
/// runs none).
fn data_replicas(world: &World, violations: &mut Vec<String>) -> BTreeMap<NodeId, Vec<Arc<Replica>>> {
    let mut replicas = BTreeMap::new();
    for (node, cluster) in world.clusters.lock().iter() {
        let c = &cluster.inner.controller;
        let members = c.members();
        let held: Option<Vec<Arc<Replica>>> = (0..PARTITIONS)
            .map(|p| {
                let group = c.group_of(TOPIC, p)?;
                members
                    .iter()
                    .find(|(g, _, _)| *g == group)
                    .map(|(_, _, store)| store.clone())
            })
            .collect();
        match held {
            Some(held) => {
                replicas.insert(*node, held);
            }
            None => violations.push(format!("node {node} holds no replica of {TOPIC}")),
        }
    }
    replicas
}

/// Runs the simulation with `seed` for `seconds` of faults.
fn simulate(seed: u64, seconds: u64, planted: bool) -> Outcome {
    let dir = scratch();
    let world = Arc::new(World {
        common: Common::new(seed, dir.path(), planted),
        clusters: Mutex::default(),
        created: Mutex::default(),
        seconds,
    });
    let seeded = Seeded::new(seed);
    let mut sim = build_sim(seed, seconds);
    for n in 1..=NODES {
        let w = world.clone();
        sim.host(host(n), move || boot(w.clone(), n));
    }
    let mut driven = drive(&mut sim, &*world, seconds);
    let replicas = data_replicas(&world, &mut driven.violations);
    let run = Run::new(&*world, driven, &replicas, |violations| {
        check_agreement(&world, violations)
    });
    let topics = world.created.lock().len();
    drop(seeded);
    drop(sim);
    Outcome { run, topics }
}

/// Whole nodes under crashes, partitions and held messages: no acknowledged record is lost or
/// moved, no offset holds two values, no consumer skips or goes back, and the nodes agree on
/// the controller's state and hold identical logs, for every seed.
#[test]
fn simulated_clusters_lose_no_acknowledged_record() {
    let mut created = 0;
    for seed in seeds(&FIXED_SEEDS) {
        let Outcome { run, topics } = simulate(seed, seconds(), false);
        created += topics;
        eprintln!(
            "clusters, seed {seed}: {topics} topics created during the faults; {}",
            run.summary()
        );
        run.assert_clean(seed);
        assert!(run.struck.crashes > 0, "seed {seed}: no node crashed");
    }
    // (A short run, `SIM_SECONDS` of a few, may end before any node gets to it.)
    assert!(
        created > 0 || seconds() < 20,
        "no topic was created during the faults"
    );
}

/// A seed replays the same run of whole nodes.
#[test]
fn a_seed_replays_the_same_run_of_whole_nodes() {
    assert_replays(&simulate(11, 5, false).run, &simulate(11, 5, false).run);
}

/// The checker catches a planted bug in whole nodes too: appends acknowledged before they are
/// synced are lost when every node loses power.
#[test]
fn the_checker_catches_whole_nodes_acknowledging_before_sync() {
    let caught = (1..=4).any(|seed| {
        let out = simulate(seed, seconds(), true).run;
        eprintln!("clusters, planted, seed {seed}: {:?}", out.violations.first());
        out.lost_acknowledged()
    });
    assert!(caught, "no seed's checker saw the lost acknowledged records");
}
