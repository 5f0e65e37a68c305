//! The storage layer: one partition's log on local disk. It knows nothing of topics, groups or
//! networks.
//!
//! - `format`: Kafka's RecordBatch v2, read ([`Batch`], [`Record`]); `builder`: written
//!   ([`BatchBuilder`], [`RecordBatch`]); `compression`: the codecs.
//! - `segment`, `index`, `mmap`: a segment's `.log`, `.index` and `.timeindex` files, laid out
//!   as Kafka lays them out; `mmap` holds the crate's only unsafe code.
//! - `log` ([`PartitionLog`]): appends, durability and group commit, reads; `recovery`:
//!   opening; `retention`: retention, `delete_records_before`, truncation; `compaction`:
//!   the cleaner of compacted logs; `reader`:
//!   [`LogReader`] and [`Fetch`]; `housekeeper`: background fsyncs and retention.
//! - `io`: the file-system seam [`Fs`], with [`FaultyFs`] for tests; `meta`: small
//!   metadata files.
//! - `follow`: what the logs show to other processes that read the directory (published
//!   watermarks) and how those read it; `notify`: their waiting for changes (inotify).
//!
//! The on-disk format and the write and recovery paths are specified in `docs/format.md`.
mod builder;
mod compaction;
mod compression;
pub(crate) mod follow;
pub(crate) mod format;
mod housekeeper;
mod index;
pub(crate) mod io;
mod log;
pub(crate) mod meta;
mod mmap;
pub(crate) mod notify;
pub(crate) mod producers;
mod reader;
mod recovery;
mod retention;
pub(crate) mod segment;
pub(crate) mod txnindex;
mod varint;

pub use builder::{BatchBuilder, RecordBatch};
pub use compaction::CleanStats;
pub use compression::MAX_DECOMPRESSED_BYTES;
pub use format::{
    Batch, BatchHeader, Compression, HEADER_LEN, Header, Headers, MAX_BATCH_LEN, OwnedHeader, Record,
    RecordIter, Records, TimestampType, compute_crc, frame_len,
};
pub use housekeeper::Housekeeper;
pub use io::{FaultyFs, Fs, FsFile, StdFs};
#[cfg(feature = "cluster")]
pub(crate) use log::MAX_REPLICATED_BATCH;
#[cfg(feature = "kafka")]
pub(crate) use log::RetryDuplicate;
pub(crate) use log::check_batch;
pub use log::{AppendInfo, LogBuilder, PartitionLog, RaisedPast, Signal, TimestampOffset};
#[cfg(feature = "cluster")]
pub(crate) use log::{Elsewhere, Replicate, Verifier};
pub(crate) use log::{Oversized, ReadPin, now_ms, watch};
pub use meta::MAX_METADATA_BYTES;
pub use reader::{DEFAULT_FETCH_BYTES, Fetch, LogReader};
pub use recovery::FORMAT_VERSION;
pub(crate) use recovery::recorded_log_start;
#[cfg(feature = "cluster")]
pub(crate) use recovery::{REPLICA_FILE, RESTART_FILE, SNAPSHOT_FILE};
pub use txnindex::AbortedTransaction;
