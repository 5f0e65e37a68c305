//! Opening a log: checking the directory, taking its lock, and recovering its segments. The
//! procedure is numbered in `docs/format.md` ("Recovery").

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::storage::compaction;
use crate::storage::housekeeper::Housekeeper;
use crate::storage::io::{self, Fs};
use crate::storage::log::{Inner, SyncState, Writer};
use crate::storage::segment::{self, Segment};
use crate::storage::{follow, meta, producers, txnindex};

/// The on-disk format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
pub(super) const META_FILE: &str = "log.meta";
pub(super) const LOCK_FILE: &str = ".lock";
pub(super) const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// State that the owner of a replicated log keeps beside it (its vote, where its entries
/// start): the log keeps it, and leaves it alone.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) const REPLICA_FILE: &str = "replica.meta";
/// The last snapshot of a replica's Raft state machine (metadata only), kept by its owner.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) const SNAPSHOT_FILE: &str = "snapshot.meta";
/// Present while a replica's log restarts after a snapshot (its owner finishes the restart).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) const RESTART_FILE: &str = "restart.meta";

/// The contents of `log.meta`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct LogMeta {
    pub(super) format_version: u32,
    /// Raised by `delete_records_before`; segments below it may still exist.
    pub(super) log_start_offset: i64,
}

impl Inner {
    pub(super) fn open(
        dir: PathBuf,
        config: LogConfig,
        fs: Arc<dyn Fs>,
        housekeeper: Housekeeper,
        replicated: bool,
    ) -> Result<Inner> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotALog {
                path: dir,
                reason: "it is not a directory".into(),
            });
        }
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        // A foreign directory is refused before anything is written into it.
        let existing = meta::read::<LogMeta>(&dir.join(META_FILE))?;
        if existing.is_none() {
            io::refuse_foreign_files(&dir, META_FILE)?;
        }
        let lock = io::lock_dir(&dir, LOCK_FILE)?;
        let meta = load_or_create_meta(&*fs, &dir)?;
        let cleaned_to = compaction::recover(&*fs, &dir)?;
        let found = list_segments(&*fs, &dir)?;
        let clean = dir.join(CLEAN_SHUTDOWN_FILE).exists();
        let interval = config.index_interval_bytes;

        let mut bases = found;
        if bases.is_empty() {
            bases.push(meta.log_start_offset);
        }
        let mut segments = Vec::with_capacity(bases.len());
        let n = bases.len();
        // Whether recovery left the active segment as the last clean close did.
        let mut active_as_closed = clean;
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == n;
            // Compaction leaves gaps between batches; only a segment it never rewrote (and so
            // the active one, unless a truncation made a cleaned segment active) is dense.
            let dense = last && base >= cleaned_to;
            let had_indexes = Segment::index_files_exist(&dir, base);
            let seg = Segment::open(&*fs, &dir, base, None)?;
            let end = if last && !clean {
                // After a crash the active segment's tail is unknown: check every batch.
                seg.rebuild(interval, dense, config.segment_index_bytes)?
            } else {
                match had_indexes
                    .then(|| seg.load(interval, dense))
                    .transpose()?
                    .flatten()
                {
                    Some(end) => end,
                    None => {
                        log::warn!("rebuilding the indexes of {}", seg.path().display());
                        let end = seg.rebuild(interval, dense, config.segment_index_bytes)?;
                        if last {
                            active_as_closed = false;
                        } else {
                            seg.seal()?;
                        }
                        end
                    }
                }
            };
            if let Some(why) = end.stopped_by {
                if last {
                    active_as_closed = false;
                    if seg.zeros_from(end.valid_len)? {
                        log::info!(
                            "recovery: cutting the zeros past byte {} of {} (blocks reserved \
                             for appends, or writes the crash took back)",
                            end.valid_len,
                            seg.path().display()
                        );
                    } else {
                        log::warn!(
                            "recovery: truncating {} at byte {} ({why})",
                            seg.path().display(),
                            end.valid_len
                        );
                    }
                    seg.truncate_file(end.valid_len)?;
                } else {
                    // Sealed segments are never cut: reads of the bad batch report it.
                    log::error!(
                        "sealed segment {} is damaged at byte {}: {why}",
                        seg.path().display(),
                        end.valid_len
                    );
                }
            }
            seg.publish_all();
            segments.push(Arc::new(seg));
        }
        let active = segments.last().expect("at least one segment").clone();
        // After a clean close that recovery did not have to mend, the marker stays until the
        // first change to the active segment (`Inner::unmark_clean`): a log that is only read
        // opens and closes without a sync.
        if !active_as_closed {
            active.unseal(config.segment_index_bytes)?;
            // Whatever survived is made durable before anyone reads it.
            active.sync()?;
            if clean {
                let marker = dir.join(CLEAN_SHUTDOWN_FILE);
                fs.remove_file(&marker).ctx("remove", &marker)?;
            }
            fs.sync_dir(&dir).ctx("fsync", &dir)?;
        }

        let log_end = active.next_offset();
        let log_start = meta.log_start_offset.max(segments[0].base_offset).min(log_end);
        if log_start < meta.log_start_offset {
            // A crash took back records that the log start had already passed (under a policy
            // that acknowledges before syncing): the log restarts at its end.
            let meta = LogMeta {
                log_start_offset: log_start,
                ..meta
            };
            meta::write(&*fs, &dir.join(META_FILE), &meta)?;
        }
        // The producers as of the log end: the newest snapshot and the batches after it; the
        // aborted transactions: the index files up to the snapshot, those batches after it.
        let rebuilt = producers::rebuild(&*fs, &dir, &segments, log_end)?;
        let mut aborted = txnindex::load(&dir, &segments, rebuilt.from)?;
        for entry in rebuilt.aborted {
            aborted.push(entry);
        }
        txnindex::rewrite_from(&*fs, &dir, &segments, &aborted, rebuilt.from)?;
        if rebuilt.from < log_end {
            // What the replay found is kept, so the next open does not replay it again (a log
            // written before snapshots, only read since, would replay all of it every time).
            // The index files of the replayed segments are made durable first: past the
            // snapshot, recovery trusts them.
            for seg in segments.iter().filter(|s| s.next_offset() > rebuilt.from) {
                txnindex::sync(&*fs, &dir, seg.base_offset)?;
            }
            let bytes = rebuilt.state.encode();
            if let Err(e) = producers::write_snapshot(&*fs, &dir, log_end, &bytes) {
                log::warn!(
                    "{}: writing the producer snapshot at {log_end}: {e}",
                    dir.display()
                );
            }
        }
        Ok(Inner {
            config: RwLock::new(config),
            fs,
            lock: Mutex::new(Some(lock)),
            housekeeper,
            writer: Mutex::new(Writer {
                active,
                first_append: None,
                first_timestamp: None,
                marked_clean: active_as_closed,
            }),
            segments: RwLock::new(Arc::new(segments)),
            log_start: AtomicI64::new(log_start),
            log_end: AtomicI64::new(log_end),
            // A replica's owner knows how much of it is committed, and says so.
            high_watermark: Arc::new(AtomicI64::new(if replicated { log_start } else { log_end })),
            beacon: OnceLock::new(),
            sync: Mutex::new(SyncState {
                durable: log_end,
                syncing: false,
                cuts: VecDeque::new(),
            }),
            synced: Condvar::new(),
            waiters: Mutex::new(()),
            advanced: Condvar::new(),
            waiting: AtomicUsize::new(0),
            watchers: Mutex::new(Vec::new()),
            watched: AtomicUsize::new(0),
            poison: OnceLock::new(),
            closed: AtomicBool::new(false),
            cleaning: Mutex::new(()),
            cleaned_to: AtomicI64::new(cleaned_to),
            truncations: AtomicU64::new(0),
            replicated,
            #[cfg(feature = "cluster")]
            replicator: OnceLock::new(),
            producers: Mutex::new(rebuilt.state),
            aborted: RwLock::new(aborted),
            producing: Mutex::new(()),
            meters: crate::telemetry::LogMeters::new(&dir),
            #[cfg(feature = "cluster")]
            verifier: OnceLock::new(),
            #[cfg(feature = "cluster")]
            turn: Arc::default(),
            dir,
        })
    }
}

/// The log start offset `log.meta` in `dir` records, if it can be read (for a reader in another
/// process).
pub(crate) fn recorded_log_start(dir: &Path) -> Option<i64> {
    meta::read::<LogMeta>(&dir.join(META_FILE))
        .ok()
        .flatten()
        .map(|m| m.log_start_offset)
}

/// Reads `log.meta`, or writes a fresh one into a directory that holds nothing else.
fn load_or_create_meta(fs: &dyn Fs, dir: &Path) -> Result<LogMeta> {
    let path = dir.join(META_FILE);
    if let Some(meta) = meta::read::<LogMeta>(&path)? {
        if meta.format_version > FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                path: dir.to_path_buf(),
                found: meta.format_version,
                supported: FORMAT_VERSION,
            });
        }
        return Ok(meta);
    }
    io::refuse_foreign_files(dir, META_FILE)?;
    let meta = LogMeta {
        format_version: FORMAT_VERSION,
        log_start_offset: 0,
    };
    meta::write(fs, &path, &meta)?;
    Ok(meta)
}

/// The base offsets of the segments in `dir`, sorted. Index files without a log file (left by
/// a crash while deleting a segment) and temporary files are removed.
fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<i64>> {
    let mut logs = Vec::new();
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let name = entry.ctx("list", dir)?.file_name();
        let name = name.to_string_lossy().into_owned();
        match segment::parse_file_name(&name) {
            Some((base, "log")) => logs.push(base),
            Some((base, "index" | "timeindex" | txnindex::SUFFIX)) => orphans.push((base, name)),
            Some((_, producers::SNAPSHOT_SUFFIX)) => {}
            _ if [
                META_FILE,
                LOCK_FILE,
                CLEAN_SHUTDOWN_FILE,
                REPLICA_FILE,
                SNAPSHOT_FILE,
                RESTART_FILE,
                compaction::CHECKPOINT_FILE,
                follow::WATERMARK_FILE,
            ]
            .contains(&name.as_str()) => {}
            _ if name.ends_with(".tmp") => orphans.push((-1, name)),
            _ => log::warn!("ignoring unknown file {name:?} in {}", dir.display()),
        }
    }
    logs.sort_unstable();
    for (base, name) in orphans {
        if logs.binary_search(&base).is_err() {
            let path = dir.join(&name);
            fs.remove_file(&path).ctx("remove", &path)?;
        }
    }
    Ok(logs)
}
