//! Starting one replica of a partition: its log (opened as replicated), the Raft log and
//! state machine over it, and its Raft group on the node's router.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use parking_lot::RwLock;
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::cluster::Timing;
use crate::cluster::entry::{Records, UNASSIGNED};
use crate::cluster::log_store::{Io, LogStore, MAX_ENTRY_BYTES, Replica};
use crate::cluster::peer::{GroupId, Groups, Network, Proposed, Raft, Router, propose_judged};
use crate::cluster::raft::{Appended, NodeId};
use crate::cluster::state_machine::{ControllerHook, StateMachine};
use crate::error::{Error, Result};
use crate::storage::{AppendInfo, Elsewhere, PartitionLog, RecordBatch, Replicate};

/// Raft's settings for a group with `timing` (by default a leader heartbeats every 100 ms
/// and is replaced after 0.5 to 1 s of silence): an AppendEntries carries at most 64
/// batches; a leader that restarts is elected again, in a new term. Raft never purges the
/// log on its own (the log is the partition's data: retention purges it).
pub(crate) fn raft_config(timing: &Timing) -> Result<Arc<openraft::Config>> {
    let ms = |d: Duration| d.as_millis() as u64;
    let config = openraft::Config {
        cluster_name: "rivulet".into(),
        heartbeat_interval: ms(timing.heartbeat),
        election_timeout_min: ms(timing.election_timeout_min),
        election_timeout_max: ms(timing.election_timeout_max),
        max_payload_entries: 64,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        // A leader sends entries before its own sync covers them. Back after a power cut that
        // lost such a tail, a leader that took its term up again would write other entries
        // at the indexes its followers hold in that term, and Raft's log matching would take
        // them for the same: a restarted leader stands for election in a new term instead.
        enable_leader_restore: Some(false),
        ..openraft::Config::default()
    };
    config.validate().map(Arc::new).map_err(cluster_error)
}

pub(crate) fn cluster_error(e: impl std::fmt::Display) -> Error {
    Error::Cluster {
        reason: e.to_string(),
    }
}

/// How long an append waits for a leader to take it before it gives up.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One running replica of a partition.
pub(crate) struct PartitionReplica {
    pub(crate) raft: Raft,
    pub(crate) replica: Arc<Replica>,
    appender: Appender,
}

impl PartitionReplica {
    /// Opens the replica in `dir` and starts its Raft group as node `me`; the log's appends go
    /// through the group from then on.
    #[cfg(test)]
    pub(crate) async fn open(
        me: NodeId,
        dir: std::path::PathBuf,
        config: crate::config::LogConfig,
        router: Router,
        group: GroupId,
    ) -> Result<PartitionReplica> {
        let log = tokio::task::spawn_blocking(move || {
            PartitionLog::builder(&dir).config(config).replicated().open()
        })
        .await
        .map_err(cluster_error)??;
        let config = raft_config(&Timing::default())?;
        Self::start(me, log, router, group, None, (Io::Threads, config)).await
    }

    /// Starts the Raft group of `log` (opened as replicated) as node `me`; the log's appends
    /// go through the group from then on. A controller's state machine sends what it applies
    /// to `controller`. `io` says where its storage work runs.
    pub(crate) async fn start(
        me: NodeId,
        log: PartitionLog,
        router: Router,
        group: GroupId,
        controller: Option<ControllerHook>,
        (io, config): (Io, Arc<openraft::Config>),
    ) -> Result<PartitionReplica> {
        let replica = io
            .blocking(move || {
                let fs = log.fs();
                Replica::open(log, fs, io)
            })
            .await
            .map_err(cluster_error)??;
        let store = LogStore::new(replica.clone()).map_err(cluster_error)?;
        // The controller's state is not in its snapshots: its log is never purged.
        let purges = controller.is_none();
        let sm = StateMachine::new(replica.clone(), store.writes(), controller);
        let network = Network {
            router: router.clone(),
            group: group.clone(),
        };
        let raft = Raft::new(me, config, network, store, sm)
            .await
            .map_err(cluster_error)?;
        let appender = Appender(Arc::new(AppenderState {
            me,
            raft: RwLock::new(Some(raft.clone())),
            router,
            group,
            runtime: Handle::current(),
            replica: Arc::downgrade(&replica),
            purges,
            purging: AtomicBool::new(false),
            leaders: None,
        }));
        replica.log.replicate_through(Arc::new(appender.clone()));
        Ok(PartitionReplica {
            raft,
            replica,
            appender,
        })
    }

    /// Appends `batch` through Raft, at whichever node leads: returns once it is committed.
    pub(crate) async fn propose(&self, batch: RecordBatch) -> Result<Appended> {
        self.appender.append_anywhere(batch).await
    }

    /// What appends to this replica's partition (at whichever node leads it), to hold
    /// without holding the replica.
    #[cfg(test)]
    pub(crate) fn appender(&self) -> Appender {
        self.appender.clone()
    }

    /// Stops the replica's Raft group; its log refuses appends from then on.
    pub(crate) async fn shutdown(&self) -> Result<()> {
        self.appender.0.raft.write().take();
        self.raft.shutdown().await.map_err(cluster_error)
    }
}

/// Takes a replicated log's appends to the partition's leader.
#[derive(Clone)]
pub(crate) struct Appender(Arc<AppenderState>);

struct AppenderState {
    me: NodeId,
    /// `None` once the replica stops (the log holds the appender: this breaks the cycle).
    raft: RwLock<Option<Raft>>,
    router: Router,
    group: GroupId,
    runtime: Handle,
    /// For retention's purges (weak: the replica's log holds the appender).
    replica: Weak<Replica>,
    /// Whether retention may purge the log (not the controller's).
    purges: bool,
    /// A purge is under way.
    purging: AtomicBool,
    /// For a node that holds no replica of the group (no local Raft): where the leaders the
    /// other nodes name are, to forward appends to.
    leaders: Option<Arc<Groups>>,
}

/// How long a node that holds no replica waits for a read at the leader.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a purge waits for the snapshot it asked for.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

impl fmt::Debug for Appender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.0;
        write!(
            f,
            "Appender(node {}, {}-{})",
            s.me, s.group.topic, s.group.partition
        )
    }
}

impl Appender {
    /// Proposes `batch` to the local replica, or to the leader it names, until one takes it
    /// (at most [`PROPOSE_TIMEOUT`]). Only a refusal that says nothing was appended ("not the
    /// leader") is tried again; any other failure leaves the outcome unknown and is returned.
    pub(crate) async fn append_anywhere(&self, mut batch: RecordBatch) -> Result<Appended> {
        let s = &self.0;
        if batch.len() > MAX_ENTRY_BYTES {
            return Err(Error::BatchTooLarge {
                size: batch.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        batch.set_base_offset(UNASSIGNED);
        let producer_id = batch.header().producer_id;
        let records = Records(batch.into_bytes());
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        // A node that holds no replica asks the leader the others name (none yet: it waits
        // for one, as for an election).
        let fallback = || match &s.leaders {
            None => Some(s.me),
            Some(leaders) => leaders.heard(&s.group).and_then(|p| p.leader),
        };
        let mut target = fallback();
        let mut redirects = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let proposed = match target {
                None => Ok(Proposed::NotLeader(None)),
                Some(t) if t == s.me && s.leaders.is_none() => {
                    let raft = s
                        .raft
                        .read()
                        .clone()
                        .ok_or_else(|| cluster_error("the replica has stopped"))?;
                    let log = s.replica.upgrade().map(|r| r.log.clone());
                    propose_judged(&raft, log, records.clone(), left).await
                }
                Some(t) => s.router.propose(t, s.group.clone(), records.clone(), left).await,
            };
            let leader = match proposed.map_err(cluster_error)? {
                Proposed::Appended(a) => return Ok(a),
                Proposed::Refused(error) => return Err(Error::Producer { producer_id, error }),
                Proposed::NotLeader(leader) => leader,
                // A leader that went away: ask again who leads now.
                Proposed::Unreachable(_) => None,
            };
            if Instant::now() >= deadline {
                return Err(cluster_error(format!(
                    "no leader of {}-{} took the batch in {PROPOSE_TIMEOUT:?}",
                    s.group.topic, s.group.partition
                )));
            }
            redirects += 1;
            match leader {
                // Straight to the leader named, unless nodes keep naming each other (views
                // that disagree during an election): then wait a little first.
                Some(l) if Some(l) != target => {
                    if redirects > 2 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    target = Some(l);
                }
                // No leader known (an election is on), or the named one refused.
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    target = fallback();
                }
            }
        }
    }
}

/// Runs `f` on `runtime` and waits for it on this thread: for the cluster's blocking API,
/// whose callers are threads of their own (or the blocking pool), never the runtime's
/// workers.
pub(crate) fn run_on<T: Send + 'static>(
    runtime: &Handle,
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .map_err(|_| cluster_error("the cluster's runtime has stopped"))?
}

impl Appender {
    /// Snapshots the state machine (if its last snapshot is older) and purges the entries up
    /// to `upto`, which are applied.
    async fn purge(raft: &Raft, upto: u64) -> std::result::Result<(), String> {
        let covered = |m: &openraft::RaftMetrics<crate::cluster::raft::TypeConfig>| {
            m.snapshot.is_some_and(|s| s.index >= upto)
        };
        if !covered(&raft.metrics().borrow_watched()) {
            raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
            raft.wait(Some(SNAPSHOT_WAIT))
                .metrics(covered, "a snapshot for retention")
                .await
                .map_err(|e| e.to_string())?;
        }
        raft.trigger().purge_log(upto).await.map_err(|e| e.to_string())
    }
}

/// Where the appends to `log` go at a node that holds no replica of its partition: to the
/// leader the other nodes name, over the peer link.
pub(crate) fn forward_appends(
    log: &PartitionLog,
    me: NodeId,
    router: Router,
    group: GroupId,
    leaders: Arc<Groups>,
) {
    if log.is_replicating() {
        return;
    }
    log.replicate_through(Arc::new(Appender(Arc::new(AppenderState {
        me,
        raft: RwLock::new(None),
        router,
        group,
        runtime: Handle::current(),
        replica: Weak::new(),
        purges: false,
        purging: AtomicBool::new(false),
        leaders: Some(leaders),
    }))));
}

impl Replicate for Appender {
    /// Retention's purge: Raft purges only entries a snapshot covers, and a leader waits for
    /// the replication that still reads them; the log store then deletes the segments below
    /// the new first entry. One purge at a time; retention asks again on its next round.
    fn purge_before(&self, offset: i64) {
        let s = &self.0;
        if !s.purges || s.purging.swap(true, Ordering::AcqRel) {
            return;
        }
        let upto = s
            .replica
            .upgrade()
            .and_then(|r| r.index.read().last_entry_below(offset));
        let (Some(upto), Some(raft)) = (upto, s.raft.read().clone()) else {
            s.purging.store(false, Ordering::Release);
            return;
        };
        // Lets the next purge go when this one ends, however it ends (a runtime shutting
        // down drops the task unrun).
        struct Done(Appender);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.0.purging.store(false, Ordering::Release);
            }
        }
        let done = Done(self.clone());
        s.runtime.spawn(async move {
            if let Err(e) = Self::purge(&raft, upto).await {
                let s = &done.0.0;
                log::warn!(
                    "{}-{}: purging entries up to {upto} for retention: {e}",
                    s.group.topic,
                    s.group.partition
                );
            }
        });
    }

    fn reads_elsewhere(&self) -> bool {
        self.0.leaders.is_some()
    }

    /// At a node that holds no replica: reads at the leader the other nodes name.
    fn read_elsewhere(
        &self,
        from: Option<i64>,
        max_bytes: usize,
        committed: bool,
    ) -> Option<Result<Elsewhere>> {
        let s = &self.0;
        let leaders = s.leaders.as_ref()?;
        let Some(leader) = leaders.heard(&s.group).and_then(|p| p.leader) else {
            return Some(Err(cluster_error(format!(
                "no leader of {}-{} is known yet",
                s.group.topic, s.group.partition
            ))));
        };
        let (router, group) = (s.router.clone(), s.group.clone());
        Some(run_on(&s.runtime, async move {
            router
                .read(leader, group, (from, max_bytes, committed), READ_TIMEOUT)
                .await
        }))
    }

    fn append(&self, batch: RecordBatch) -> Result<AppendInfo> {
        let appender = self.clone();
        let a = run_on(
            &self.0.runtime,
            async move { appender.append_anywhere(batch).await },
        )?;
        Ok(AppendInfo {
            base_offset: a.base_offset,
            last_offset: a.last_offset,
            log_append_time: a.max_timestamp,
        })
    }
}
