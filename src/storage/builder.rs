//! Writing batches: [`BatchBuilder`] encodes records into a RecordBatch v2, and
//! [`RecordBatch`] is one whole, validated batch, ready to append (built here or received from
//! the wire and checked). The format itself is described in `format.rs`.

use std::fmt;

use crate::error::BatchError;
use crate::storage::compression;
use crate::storage::format::*;
use crate::storage::varint::{put_varint, put_varlong, varint_len, varlong_len};

/// Builds one batch record by record. Records are encoded straight into the batch's buffer (or
/// into a staging buffer that is compressed at [`BatchBuilder::finish`]).
///
/// ```
/// use rivulet::storage::{BatchBuilder, Compression, Header};
/// let mut b = BatchBuilder::new(Compression::None);
/// b.push(1_700_000_000_000, Some(b"key"), Some(b"value"), &[Header::new("trace", b"42")]);
/// let batch = b.finish().unwrap();
/// assert_eq!(batch.header().record_count, 1);
/// ```
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// The batch: header space, then records when uncompressed.
    buf: Vec<u8>,
    /// Records awaiting compression.
    staged: Vec<u8>,
    compression: Compression,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    last_offset_delta: i32,
}

impl BatchBuilder {
    /// A builder for a batch with the given codec.
    pub fn new(compression: Compression) -> Self {
        Self::with_capacity(compression, 0)
    }

    /// A builder whose buffer starts with room for `bytes` of records.
    pub fn with_capacity(compression: Compression, bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            staged: Vec::new(),
            compression,
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: compression as i16,
            last_offset_delta: -1,
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of a transaction.
    pub fn transactional(mut self, yes: bool) -> Self {
        self.set_flag(TRANSACTIONAL_BIT, yes);
        self
    }

    /// Marks the batch as a control batch.
    pub fn control(mut self, yes: bool) -> Self {
        self.set_flag(CONTROL_BIT, yes);
        self
    }

    /// Marks the batch with the cleaner's delete horizon (see
    /// [`BatchHeader::delete_horizon`](crate::storage::BatchHeader::delete_horizon)): the base
    /// timestamp holds it, and records' timestamps are stored relative to it.
    pub(crate) fn delete_horizon(mut self, at_ms: i64) -> Self {
        self.set_flag(DELETE_HORIZON_BIT, true);
        self.base_timestamp = at_ms;
        self
    }

    fn set_flag(&mut self, bit: i16, on: bool) {
        if on {
            self.attributes |= bit
        } else {
            self.attributes &= !bit
        }
    }

    /// Appends a record with the given timestamp (milliseconds since the Unix epoch).
    ///
    /// # Panics
    /// If the batch already holds `i32::MAX` records.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header<'_>]) {
        assert!(self.count < i32::MAX, "a batch holds at most i32::MAX records");
        let field = |b: Option<&[u8]>| b.map_or(1, |b| varint_len(b.len() as i32) + b.len());
        let headers_len = headers.iter().map(|h| field(Some(h.key)) + field(h.value)).sum();
        self.put_record(
            self.count,
            timestamp,
            key,
            value,
            headers.len() as i32,
            headers_len,
            |out| {
                for h in headers {
                    put_bytes(out, Some(h.key));
                    put_bytes(out, h.value);
                }
            },
        );
    }

    /// Copies a stored record into the batch at `offset_delta` (which must be above the
    /// previous record's), its headers as they are encoded: the cleaner, the producer's split
    /// and recompression copy records this way.
    pub(crate) fn push_copy(&mut self, offset_delta: i32, record: &Record<'_>) {
        let (raw_headers, header_count) = record.raw_headers();
        self.put_record(
            offset_delta,
            record.timestamp,
            record.key,
            record.value,
            header_count as i32,
            raw_headers.len(),
            |out| out.extend_from_slice(raw_headers),
        );
    }

    /// Encodes one record; `write_headers` writes the `headers_len` bytes after the count.
    #[allow(clippy::too_many_arguments)]
    fn put_record(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        header_count: i32,
        headers_len: usize,
        write_headers: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.count == 0 && self.attributes & DELETE_HORIZON_BIT == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        let field = |b: Option<&[u8]>| b.map_or(1, |b| varint_len(b.len() as i32) + b.len());
        let len = 1
            + varlong_len(ts_delta)
            + varint_len(offset_delta)
            + field(key)
            + field(value)
            + varint_len(header_count)
            + headers_len;
        let out = if self.compression == Compression::None {
            &mut self.buf
        } else {
            &mut self.staged
        };
        out.reserve(len + 5);
        put_varint(out, len as i32);
        out.push(0); // attributes
        put_varlong(out, ts_delta);
        put_varint(out, offset_delta);
        put_bytes(out, key);
        put_bytes(out, value);
        put_varint(out, header_count);
        write_headers(out);
        self.count += 1;
        self.last_offset_delta = offset_delta;
    }

    /// Copies a stored batch's attributes (codec, timestamp type, transactional and control
    /// flags, delete horizon) and producer fields.
    pub(crate) fn like(mut self, h: &BatchHeader) -> Self {
        self.attributes = h.attributes;
        if let Some(horizon) = h.delete_horizon() {
            self.base_timestamp = horizon;
        }
        self.producer_id = h.producer_id;
        self.producer_epoch = h.producer_epoch;
        self.base_sequence = h.base_sequence;
        self
    }

    /// Keeps the batch's offset range at `delta` even if its last records were left out.
    pub(crate) fn last_offset_delta(mut self, delta: i32) -> Self {
        self.last_offset_delta = self.last_offset_delta.max(delta);
        self
    }

    /// The header of a stored batch whose records compaction removed every one of, keeping
    /// its offset range, producer fields, flags and largest timestamp: a replicated log keeps
    /// such a batch where a single node's cleaner drops the batch, because every batch is a
    /// Raft entry and the entries' indexes may have no holes. Uncompressed (there is nothing
    /// to compress), and without a delete horizon (there is no tombstone left).
    pub(crate) fn emptied(h: &BatchHeader) -> RecordBatch {
        let mut b = BatchBuilder::new(Compression::None).like(h);
        b.attributes &= !(CODEC_MASK | DELETE_HORIZON_BIT);
        b.base_timestamp = h.max_timestamp;
        b.max_timestamp = h.max_timestamp;
        b.last_offset_delta = h.last_offset_delta;
        let mut batch = b.encode();
        batch.set_base_offset(h.base_offset);
        batch.set_partition_leader_epoch(h.partition_leader_epoch);
        batch
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size of the batch so far, before compression.
    pub fn size(&self) -> usize {
        self.buf.len() + self.staged.len()
    }

    /// Compresses, fills in the header and the CRC, and returns the batch with base offset 0
    /// (the log assigns the real one). Refuses an empty batch, and a compressed one whose
    /// records take more than [`MAX_DECOMPRESSED_BYTES`](crate::storage::MAX_DECOMPRESSED_BYTES)
    /// uncompressed: no reader would decompress it.
    pub fn finish(mut self) -> Result<RecordBatch, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        if self.compression != Compression::None {
            // Every reader refuses to decompress more than this: a batch past it could be
            // appended but never read back.
            if self.staged.len() > compression::MAX_DECOMPRESSED_BYTES {
                return Err(BatchError::Decompression {
                    codec: self.compression,
                    reason: format!(
                        "the records take {} bytes uncompressed, more than the {} a batch may \
                         decompress to",
                        self.staged.len(),
                        compression::MAX_DECOMPRESSED_BYTES
                    ),
                });
            }
            compression::compress(self.compression, &self.staged, &mut self.buf)?;
        }
        if self.buf.len() > MAX_BATCH_LEN {
            return Err(BatchError::LengthOutOfBounds {
                length: (self.buf.len() - LENGTH_PREFIX) as i64,
                min: MIN_BATCH_LENGTH,
                max: (MAX_BATCH_LEN - LENGTH_PREFIX) as i64,
            });
        }
        Ok(self.encode())
    }

    /// Fills in the header and the CRC of the records in `buf`.
    fn encode(mut self) -> RecordBatch {
        let length = (self.buf.len() - LENGTH_PREFIX) as i32;
        let b = &mut self.buf;
        b[BASE_OFFSET_AT..LENGTH_AT].copy_from_slice(&0i64.to_be_bytes());
        b[LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&length.to_be_bytes());
        b[LEADER_EPOCH_AT..MAGIC_AT].copy_from_slice(&(-1i32).to_be_bytes());
        b[MAGIC_AT] = MAGIC as u8;
        b[ATTRIBUTES_AT..LAST_OFFSET_DELTA_AT].copy_from_slice(&self.attributes.to_be_bytes());
        b[LAST_OFFSET_DELTA_AT..BASE_TIMESTAMP_AT].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        b[BASE_TIMESTAMP_AT..MAX_TIMESTAMP_AT].copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[MAX_TIMESTAMP_AT..PRODUCER_ID_AT].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[PRODUCER_ID_AT..PRODUCER_EPOCH_AT].copy_from_slice(&self.producer_id.to_be_bytes());
        b[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT].copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[BASE_SEQUENCE_AT..RECORD_COUNT_AT].copy_from_slice(&self.base_sequence.to_be_bytes());
        b[RECORD_COUNT_AT..HEADER_LEN].copy_from_slice(&self.count.to_be_bytes());
        let crc = compute_crc(b);
        b[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        RecordBatch { bytes: self.buf }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// The one batch `bytes` hold, whole (frame and CRC checked), with nothing after it.
fn sole_batch(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    let (batch, rest) = Batch::parse(bytes)?;
    if !rest.is_empty() {
        return Err(BatchError::LengthOutOfBounds {
            length: batch.header.batch_length as i64,
            min: (bytes.len() - LENGTH_PREFIX) as i64,
            max: (bytes.len() - LENGTH_PREFIX) as i64,
        });
    }
    Ok(batch)
}

/// One whole, validated batch that the log can append: built by [`BatchBuilder`] or checked by
/// [`RecordBatch::from_bytes`].
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Vec<u8>,
}

impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("header", &self.header())
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl RecordBatch {
    /// Validates bytes received from elsewhere (a producer on the wire): exactly one batch, its
    /// frame and CRC, and every record in it, which must have offset deltas 0, 1, 2, ... as a
    /// producer writes them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, BatchError> {
        Self::from_bytes_within(bytes, compression::MAX_DECOMPRESSED_BYTES)
    }

    /// Checks one batch as a log stores it (a replica's copy of a leader's batch): its frame and
    /// CRC, but not its records, which compaction may have thinned or emptied.
    #[cfg(feature = "cluster")]
    pub(crate) fn from_stored(bytes: Vec<u8>) -> Result<Self, BatchError> {
        sole_batch(&bytes)?;
        Ok(RecordBatch { bytes })
    }

    /// [`from_bytes`](Self::from_bytes), refusing a compressed batch whose records take more
    /// than `limit` bytes (at most [`MAX_DECOMPRESSED_BYTES`](crate::storage::MAX_DECOMPRESSED_BYTES))
    /// before more than that is decompressed.
    pub fn from_bytes_within(bytes: Vec<u8>, limit: usize) -> Result<Self, BatchError> {
        let batch = sole_batch(&bytes)?;
        let h = batch.header;
        if h.record_count == 0 {
            return Err(BatchError::Empty);
        }
        if h.last_offset_delta != h.record_count - 1 {
            return Err(BatchError::BadRecordCount {
                count: h.record_count,
                reason: "a produced batch must have last offset delta = count - 1",
            });
        }
        let records = batch.records_within(limit)?;
        for (i, record) in records.iter().enumerate() {
            let record = record?;
            if record.offset - h.base_offset != i as i64 {
                return Err(BatchError::BadRecord {
                    index: i as i32,
                    reason: "offset deltas of a produced batch must be 0, 1, 2, ...",
                });
            }
        }
        Ok(RecordBatch { bytes })
    }

    /// The decoded header.
    pub fn header(&self) -> BatchHeader {
        BatchHeader::decode(&self.bytes)
    }

    /// The batch's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A borrowed view, for reading the records.
    pub fn view(&self) -> Batch<'_> {
        Batch {
            bytes: &self.bytes,
            header: self.header(),
        }
    }

    /// The batch's bytes, consuming it.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a batch has at least a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Sets the base offset (outside the CRC).
    pub(crate) fn set_base_offset(&mut self, offset: i64) {
        self.bytes[BASE_OFFSET_AT..LENGTH_AT].copy_from_slice(&offset.to_be_bytes());
    }

    /// Sets the partition leader epoch (outside the CRC).
    pub fn set_partition_leader_epoch(&mut self, epoch: i32) {
        self.bytes[LEADER_EPOCH_AT..MAGIC_AT].copy_from_slice(&epoch.to_be_bytes());
    }

    /// Stamps the batch with the log's append time: sets the timestamp-type bit and the max
    /// timestamp, which the CRC covers, and recomputes the CRC.
    pub(crate) fn set_log_append_time(&mut self, now_ms: i64) {
        let b = &mut self.bytes;
        let attributes = be_i16(b, ATTRIBUTES_AT) | TIMESTAMP_TYPE_BIT;
        b[ATTRIBUTES_AT..LAST_OFFSET_DELTA_AT].copy_from_slice(&attributes.to_be_bytes());
        b[MAX_TIMESTAMP_AT..PRODUCER_ID_AT].copy_from_slice(&now_ms.to_be_bytes());
        let crc = compute_crc(b);
        b[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    }
}
