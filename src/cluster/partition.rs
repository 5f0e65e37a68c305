//! Starting one replica of a partition: its log (opened as replicated), the Raft log and
//! state machine over it, and its Raft group on the node's router.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cluster::entry::{Records, UNASSIGNED};
use crate::cluster::log_store::{LogStore, Replica};
use crate::cluster::peer::{GroupId, Network, Raft, Router};
use crate::cluster::raft::{Appended, NodeId};
use crate::cluster::state_machine::StateMachine;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::storage::{PartitionLog, RecordBatch, StdFs};

/// Raft's timing and limits for a partition group: a leader heartbeats every 100 ms and is
/// replaced after 0.5 to 1 s of silence; an AppendEntries carries at most 64 batches. Raft
/// never purges the log on its own (the log is the partition's data: retention purges it).
pub(crate) fn raft_config() -> Result<Arc<openraft::Config>> {
    let config = openraft::Config {
        cluster_name: "rivulet".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        max_payload_entries: 64,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        ..openraft::Config::default()
    };
    config.validate().map(Arc::new).map_err(cluster_error)
}

pub(crate) fn cluster_error(e: impl std::fmt::Display) -> Error {
    Error::Cluster {
        reason: e.to_string(),
    }
}

/// One running replica of a partition.
pub(crate) struct PartitionReplica {
    pub(crate) raft: Raft,
    pub(crate) replica: Arc<Replica>,
}

impl PartitionReplica {
    /// Opens the replica in `dir` and starts its Raft group as node `me`.
    pub(crate) async fn start(
        me: NodeId,
        dir: PathBuf,
        config: LogConfig,
        router: Router,
        group: GroupId,
    ) -> Result<PartitionReplica> {
        let replica = tokio::task::spawn_blocking(move || {
            let log = PartitionLog::builder(&dir).config(config).replicated().open()?;
            Replica::open(log, Arc::new(StdFs))
        })
        .await
        .map_err(cluster_error)??;
        let store = LogStore::new(replica.clone()).map_err(cluster_error)?;
        let sm = StateMachine::new(replica.clone());
        let raft = Raft::new(me, raft_config()?, Network { router, group }, store, sm)
            .await
            .map_err(cluster_error)?;
        Ok(PartitionReplica { raft, replica })
    }

    /// Appends `batch` through Raft (this replica must lead): returns once it is committed.
    pub(crate) async fn propose(&self, mut batch: RecordBatch) -> Result<Appended> {
        batch.set_base_offset(UNASSIGNED);
        let written = self
            .raft
            .client_write(Records(batch.into_bytes()))
            .await
            .map_err(cluster_error)?;
        Ok(written.data)
    }
}
