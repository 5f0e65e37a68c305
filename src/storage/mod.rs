//! The storage layer: one partition's log on local disk. It knows nothing of topics, groups or
//! networks.
//!
//! - [`format`](self#format): Kafka's RecordBatch v2, the unit of storage ([`Batch`],
//!   [`RecordBatch`], [`BatchBuilder`]).
//! - segments and indexes: `<base offset>.log`, `.index`, `.timeindex`, as Kafka lays them out.
//! - [`PartitionLog`]: appends, reads, durability, recovery, retention, truncation.
//! - [`Fs`]: the file-system seam, with [`FaultyFs`] for tests.
//!
//! The on-disk format and the write and recovery paths are described in `docs/format.md`.
mod compression;
pub(crate) mod format;
mod housekeeper;
mod index;
mod io;
mod log;
mod meta;
mod mmap;
mod reader;
mod segment;
mod varint;

pub use compression::MAX_DECOMPRESSED_BYTES;
pub use format::{
    Batch, BatchBuilder, BatchHeader, Compression, HEADER_LEN, Header, HeaderRef, Headers, MAX_BATCH_LEN,
    Record, RecordBatch, RecordIter, Records, TimestampType, compute_crc, frame_len,
};
pub use housekeeper::Housekeeper;
pub use io::{FaultyFs, Fs, FsFile, StdFs};
pub use log::{AppendInfo, FORMAT_VERSION, LogBuilder, PartitionLog, TimestampOffset};
pub use reader::{DEFAULT_FETCH_BYTES, Fetch, LogReader};
