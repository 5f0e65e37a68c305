//! A partition's Raft state machine. The records are already in the log (it is the Raft log),
//! so applying an entry only lets consumers see it: the high watermark moves past it. The
//! state machine also tracks the membership, and its snapshots are metadata only: the last
//! applied entry, the membership, and the offset after the last applied entry (where a
//! replica that installs the snapshot restarts its log). Snapshots are kept on disk by the
//! replica's I/O thread (`snapshot.meta`), so that a replica whose log was purged restarts
//! from its last one.

use std::io;

use futures_util::StreamExt;
use openraft::RaftSnapshotBuilder;
use openraft::storage::{EntryResponder, RaftStateMachine};
use serde::{Deserialize, Serialize};

use crate::cluster::entry::Payload;
use crate::cluster::log_store::{Replica, SavedSnapshot, Writes};
use crate::cluster::raft::{Appended, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::format::{BatchHeader, HEADER_LEN};

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

/// A snapshot's data: where the log continues after the snapshot's last entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotData {
    /// The offset of the entry after the snapshot's last one.
    pub(crate) next_offset: i64,
}

/// What the state machine has applied.
#[derive(Debug, Clone, Default)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
    /// The offset after the last applied entry.
    next_offset: i64,
}

/// An entry the controller's state machine applies, for the controller to act on; it answers
/// `done` once it has (and saved that it has).
pub(crate) struct Applying {
    pub(crate) id: LogId,
    pub(crate) payload: Payload,
    pub(crate) done: oneshot::Sender<()>,
}

/// Where a controller's state machine sends what it applies, and what it had applied when it
/// last saved.
pub(crate) struct ControllerHook {
    pub(crate) applying: mpsc::UnboundedSender<Applying>,
    pub(crate) saved: (Option<LogId>, StoredMembership),
}

/// The state machine of one replica.
pub(crate) struct StateMachine {
    replica: Arc<Replica>,
    /// Where the replica's snapshots are written.
    writes: Writes,
    applied: Applied,
    applying: Option<mpsc::UnboundedSender<Applying>>,
}

impl StateMachine {
    pub(crate) fn new(
        replica: Arc<Replica>,
        writes: Writes,
        controller: Option<ControllerHook>,
    ) -> StateMachine {
        let (applying, applied) = match controller {
            Some(ControllerHook {
                applying,
                saved: (last, membership),
            }) => (
                Some(applying),
                Applied {
                    last,
                    membership,
                    next_offset: 0,
                },
            ),
            None => (None, Applied::default()),
        };
        StateMachine {
            replica,
            writes,
            applied,
            applying,
        }
    }

    /// The offsets of the batch an entry is stored as, if it carries its stored bytes (read
    /// from the log, whose read checked them: only the header is decoded here).
    fn offsets_of(payload: &Payload) -> Option<Appended> {
        let bytes = crate::cluster::entry::batch_of(payload)?;
        if bytes.len() < HEADER_LEN {
            return None;
        }
        let h = BatchHeader::decode(bytes);
        (h.base_offset >= 0).then(|| Appended {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        })
    }
}

/// Builds metadata-only snapshots, and keeps them on disk.
pub(crate) struct SnapshotBuilder {
    meta: SnapshotMeta,
    data: SnapshotData,
    writes: Writes,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot<SnapshotData>> {
        let saved = SavedSnapshot {
            meta: self.meta.clone(),
            data: self.data,
        };
        self.writes.save_snapshot(saved).await?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: self.data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let offsets = Self::offsets_of(&entry.payload);
            if let Some(o) = offsets {
                self.replica.log.commit_to(o.last_offset + 1);
                self.applied.next_offset = o.last_offset + 1;
            }
            if let Payload::Membership(m, _) = &entry.payload {
                self.applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            }
            self.applied.last = Some(entry.log_id);
            if let Some(tx) = &self.applying {
                let (done, applied) = oneshot::channel();
                let a = Applying {
                    id: entry.log_id,
                    payload: entry.payload.clone(),
                    done,
                };
                if tx.send(a).is_err() || applied.await.is_err() {
                    return Err(io::Error::other("the controller has stopped"));
                }
            }
            if let Some(r) = responder {
                r.send(offsets.unwrap_or(Appended {
                    base_offset: -1,
                    last_offset: -1,
                    max_timestamp: -1,
                }));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let meta = SnapshotMeta {
            last_log_id: self.applied.last,
            last_membership: self.applied.membership.clone(),
        };
        let data = SnapshotData {
            next_offset: self.applied.next_offset,
        };
        SnapshotBuilder {
            meta,
            data,
            writes: self.writes.clone(),
        }
    }

    /// Installs the leader's snapshot (or, on a restart, this replica's own last one): kept
    /// on disk first, and the replica's log restarted at its offset if the log lacks the
    /// entries it covers.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> io::Result<()> {
        let saved = SavedSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        self.writes.save_snapshot(saved).await?;
        self.applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
            next_offset: snapshot.next_offset,
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot<SnapshotData>>> {
        Ok(self.replica.snapshot().map(|s| Snapshot {
            meta: s.meta,
            snapshot: s.data,
        }))
    }
}
