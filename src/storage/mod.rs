//! One partition's log.
mod compression;
pub(crate) mod format;
mod varint;

pub use compression::MAX_DECOMPRESSED_BYTES;
pub use format::{
    Batch, BatchBuilder, BatchHeader, Compression, HEADER_LEN, Header, HeaderRef, Headers, Record,
    RecordBatch, RecordIter, Records, TimestampType,
};
