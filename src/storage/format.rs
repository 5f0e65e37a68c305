//! Kafka's RecordBatch v2, the format of every batch on disk and on the wire.
//!
//! ```text
//! offset  size  field                   notes
//!      0     8  base offset             assigned by the log; outside the CRC
//!      8     4  batch length            bytes after this field (total size - 12)
//!     12     4  partition leader epoch  assigned by the log; outside the CRC
//!     16     1  magic                   always 2
//!     17     4  crc                     CRC-32C (Castagnoli) of bytes 21..end
//!     21     2  attributes              bits 0-2 codec, 3 timestamp type, 4 transactional, 5 control,
//!                                       6 delete horizon (base timestamp holds it)
//!     23     4  last offset delta
//!     27     8  base timestamp          first record's timestamp
//!     35     8  max timestamp
//!     43     8  producer id             -1 if none
//!     51     2  producer epoch          -1 if none
//!     53     4  base sequence           -1 if none
//!     57     4  record count
//!     61     -  records                 compressed as one stream if the codec is not none
//! ```
//!
//! All integers are big-endian. A record is a varint length followed by: attributes (int8, unused),
//! timestamp delta (varlong), offset delta (varint), key length (varint, -1 = null) and key,
//! value length and value, header count (varint) and headers (key length, key, value length,
//! value). Lengths and deltas are zig-zag varints.
//!
//! Because the base offset and the leader epoch sit outside the CRC, the log assigns them by
//! patching bytes 0-7 and 12-15 without recomputing anything.

use std::borrow::Cow;
use std::fmt;

use crate::error::BatchError;
use crate::storage::compression;
use crate::storage::varint::{get_varint, get_varlong};

/// Size of the batch header in bytes.
pub const HEADER_LEN: usize = 61;
/// The only supported magic byte.
pub const MAGIC: i8 = 2;
/// The batch length field counts the bytes after byte 12.
pub(crate) const LENGTH_PREFIX: usize = 12;
/// Bytes the header takes after the length field.
pub(crate) const MIN_BATCH_LENGTH: i64 = (HEADER_LEN - LENGTH_PREFIX) as i64;
/// The smallest record: length, attributes, timestamp delta, offset delta, key length, value
/// length and header count, one byte each.
pub(crate) const MIN_RECORD_LEN: usize = 7;
/// The most bytes one batch may take, whatever the caller allows: Kafka's length field is an
/// `i32`.
pub const MAX_BATCH_LEN: usize = i32::MAX as usize;

// Byte positions of the header fields.
pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const PRODUCER_ID_AT: usize = 43;
pub(crate) const PRODUCER_EPOCH_AT: usize = 51;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORD_COUNT_AT: usize = 57;

pub(crate) const CODEC_MASK: i16 = 0x07;
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
pub(crate) const TRANSACTIONAL_BIT: i16 = 1 << 4;
pub(crate) const CONTROL_BIT: i16 = 1 << 5;
/// Set by the cleaner on a batch whose tombstones it has seen: the base timestamp then holds
/// the time after which they may go (Kafka's delete horizon).
pub(crate) const DELETE_HORIZON_BIT: i16 = 1 << 6;

/// A batch's compression codec (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None = 0,
    /// gzip (feature `gzip`).
    Gzip = 1,
    /// Snappy, xerial-framed as Kafka's Java client writes it (feature `snappy`).
    Snappy = 2,
    /// LZ4 frame format (feature `lz4`).
    Lz4 = 3,
    /// Zstandard (feature `zstd`).
    Zstd = 4,
}

impl Compression {
    /// The codec with Kafka's id `id`.
    pub fn from_id(id: u8) -> Result<Self, BatchError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(BatchError::UnknownCompression(other)),
        })
    }
}

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum TimestampType {
    /// Set by the producer when it created each record.
    #[default]
    CreateTime,
    /// Set by the log when it appended the batch: every record's timestamp is the batch's max
    /// timestamp.
    LogAppendTime,
}

/// The fixed 61-byte header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field: the batch takes `batch_length + 12` bytes.
    pub batch_length: i32,
    /// The leader epoch of the partition when the batch was appended.
    pub partition_leader_epoch: i32,
    /// Format version; 2.
    pub magic: i8,
    /// CRC-32C of bytes 21 to the end.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record minus the base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: i32,
}

pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

impl BatchHeader {
    /// Decodes the header fields from the first 61 bytes, checking nothing.
    ///
    /// # Panics
    /// If `bytes` is shorter than [`HEADER_LEN`].
    pub fn decode(bytes: &[u8]) -> Self {
        BatchHeader {
            base_offset: be_i64(bytes, BASE_OFFSET_AT),
            batch_length: be_i32(bytes, LENGTH_AT),
            partition_leader_epoch: be_i32(bytes, LEADER_EPOCH_AT),
            magic: bytes[MAGIC_AT] as i8,
            crc: be_i32(bytes, CRC_AT) as u32,
            attributes: be_i16(bytes, ATTRIBUTES_AT),
            last_offset_delta: be_i32(bytes, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(bytes, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(bytes, MAX_TIMESTAMP_AT),
            producer_id: be_i64(bytes, PRODUCER_ID_AT),
            producer_epoch: be_i16(bytes, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(bytes, BASE_SEQUENCE_AT),
            record_count: be_i32(bytes, RECORD_COUNT_AT),
        }
    }

    /// The whole batch's size in bytes.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LENGTH_PREFIX
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// The compression codec.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_id((self.attributes & CODEC_MASK) as u8)
    }

    /// Whether timestamps are create times or the log's append time.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// A control batch (transaction markers), not user records.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// When the cleaner may remove this batch's tombstones (milliseconds since the Unix
    /// epoch), if a clean has seen them: `delete.retention.ms` after that clean.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }
}

/// Checks the frame of the batch at the start of `bytes` (length bounds and magic) and returns
/// its total size. The CRC is not checked. `max_len` caps the accepted total size.
///
/// Returns [`BatchError::Incomplete`] when `bytes` ends before the batch does.
pub fn frame_len(bytes: &[u8], max_len: usize) -> Result<usize, BatchError> {
    if bytes.len() < LENGTH_PREFIX {
        return Err(BatchError::Incomplete {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    }
    let length = be_i32(bytes, LENGTH_AT) as i64;
    let max = max_len.min(MAX_BATCH_LEN).saturating_sub(LENGTH_PREFIX) as i64;
    if length < MIN_BATCH_LENGTH || length > max {
        return Err(BatchError::LengthOutOfBounds {
            length,
            min: MIN_BATCH_LENGTH,
            max,
        });
    }
    if let Some(&magic) = bytes.get(MAGIC_AT)
        && magic as i8 != MAGIC
    {
        return Err(BatchError::BadMagic { found: magic as i8 });
    }
    let total = length as usize + LENGTH_PREFIX;
    if bytes.len() < total {
        return Err(BatchError::Incomplete {
            needed: total,
            available: bytes.len(),
        });
    }
    Ok(total)
}

/// CRC-32C of a batch's checked bytes (attributes to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c(&batch[ATTRIBUTES_AT..])
}

/// CRC-32C (Castagnoli), as Kafka's batches and rivulet's metadata files use it.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    // The 32-bit algorithm's checksum fits its low half.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// A validated batch borrowed from a buffer: its frame and CRC were checked. Its records are
/// read with [`Batch::records`].
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) header: BatchHeader,
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<'a> Batch<'a> {
    /// Validates the batch at the start of `bytes` (length, magic, CRC, the record count's
    /// plausibility) and returns it with the bytes after it.
    pub fn parse(bytes: &'a [u8]) -> Result<(Batch<'a>, &'a [u8]), BatchError> {
        Self::parse_bounded(bytes, MAX_BATCH_LEN)
    }

    /// [`Batch::parse`] with a cap on the batch's total size.
    pub fn parse_bounded(bytes: &'a [u8], max_len: usize) -> Result<(Batch<'a>, &'a [u8]), BatchError> {
        let total = frame_len(bytes, max_len)?;
        let (bytes, rest) = bytes.split_at(total);
        let header = BatchHeader::decode(bytes);
        let actual = compute_crc(bytes);
        if actual != header.crc {
            return Err(BatchError::CrcMismatch {
                expected: header.crc,
                actual,
            });
        }
        // A compressed body's size says nothing about its records until it is decompressed.
        let compressed = header.attributes & CODEC_MASK != 0;
        check_count(&header, (!compressed).then(|| bytes.len() - HEADER_LEN))?;
        Ok((Batch { bytes, header }, rest))
    }

    /// Splits off the batch at the start of bytes that were validated before (the frame is
    /// trusted; nothing is checked).
    pub(crate) fn parse_trusted(bytes: &'a [u8]) -> (Batch<'a>, &'a [u8]) {
        let header = BatchHeader::decode(bytes);
        let (bytes, rest) = bytes.split_at(header.total_len());
        (Batch { bytes, header }, rest)
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records. Borrows from the batch when it is uncompressed; a compressed batch is
    /// decompressed into a buffer owned by the returned value.
    pub fn records(&self) -> Result<Records<'a>, BatchError> {
        self.records_within(compression::MAX_DECOMPRESSED_BYTES)
    }

    /// [`records`](Self::records), refusing a compressed batch whose records take more than
    /// `limit` bytes (at most [`MAX_DECOMPRESSED_BYTES`](compression::MAX_DECOMPRESSED_BYTES))
    /// before more than that is decompressed.
    pub fn records_within(&self, limit: usize) -> Result<Records<'a>, BatchError> {
        let body = &self.bytes[HEADER_LEN..];
        let body = match self.header.compression()? {
            Compression::None => Cow::Borrowed(body),
            codec => {
                let plain = compression::decompress_within(codec, body, limit)?;
                check_count(&self.header, Some(plain.len()))?;
                Cow::Owned(plain)
            }
        };
        Ok(Records {
            header: self.header,
            body,
        })
    }
}

/// Refuses record counts that cannot be right: negative, more records than offsets, or more
/// records than the uncompressed body (`plain_len`, when known) has room for.
fn check_count(header: &BatchHeader, plain_len: Option<usize>) -> Result<(), BatchError> {
    let count = header.record_count;
    let bad = |reason| Err(BatchError::BadRecordCount { count, reason });
    if count < 0 {
        return bad("negative");
    }
    if header.last_offset_delta < 0 {
        return bad("the last offset delta is negative");
    }
    if count as i64 > header.last_offset_delta as i64 + 1 {
        return bad("more records than the batch's offset range");
    }
    if plain_len.is_some_and(|len| (count as usize).saturating_mul(MIN_RECORD_LEN) > len) {
        return bad("more records than the bytes can hold");
    }
    Ok(())
}

/// The records of one batch: borrowed from the batch, or decompressed.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    header: BatchHeader,
    body: Cow<'a, [u8]>,
}

impl<'a> Records<'a> {
    /// Iterates over the records in order.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            ctx: RecordContext::new(&self.header),
            data: &self.body,
            index: 0,
            count: self.header.record_count,
        }
    }

    /// The records' bytes (decompressed), consuming the value.
    pub(crate) fn into_body(self) -> Cow<'a, [u8]> {
        self.body
    }

    /// The number of records the header announces.
    pub fn len(&self) -> usize {
        self.header.record_count as usize
    }

    /// True if the batch has no records (only compaction produces such batches).
    pub fn is_empty(&self) -> bool {
        self.header.record_count == 0
    }
}

impl<'r> IntoIterator for &'r Records<'_> {
    type Item = Result<Record<'r>, BatchError>;
    type IntoIter = RecordIter<'r>;
    fn into_iter(self) -> RecordIter<'r> {
        self.iter()
    }
}

/// What a record needs from its batch to know its offset and timestamp.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordContext {
    base_offset: i64,
    last_offset_delta: i32,
    base_timestamp: i64,
    /// Every record's timestamp under log append time.
    append_time: Option<i64>,
}

impl RecordContext {
    pub(crate) fn new(h: &BatchHeader) -> Self {
        RecordContext {
            base_offset: h.base_offset,
            last_offset_delta: h.last_offset_delta,
            base_timestamp: h.base_timestamp,
            append_time: (h.timestamp_type() == TimestampType::LogAppendTime).then_some(h.max_timestamp),
        }
    }
}

/// Iterator over the records of a batch, validating each as it goes. After the announced
/// number of records it checks that no bytes are left over.
#[derive(Debug, Clone)]
pub struct RecordIter<'r> {
    ctx: RecordContext,
    data: &'r [u8],
    index: i32,
    count: i32,
}

impl<'r> Iterator for RecordIter<'r> {
    type Item = Result<Record<'r>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            if self.data.is_empty() {
                return None;
            }
            self.data = &[];
            return Some(Err(BatchError::BadRecord {
                index: self.count,
                reason: "bytes left over after the last record",
            }));
        }
        let index = self.index;
        match parse_record(self.data, &self.ctx, index) {
            Ok((record, used)) => {
                self.data = &self.data[used..];
                self.index += 1;
                Some(Ok(record))
            }
            Err(e) => {
                // Stop after the first error.
                self.index = self.count;
                self.data = &[];
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.index).max(0) as usize;
        (left, Some(left + 1))
    }
}

/// One record, borrowed from its batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's offset in its partition.
    pub offset: i64,
    /// Create time or log append time, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key; `None` is a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a null value (a tombstone in a compacted topic).
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u32,
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> Record<'a> {
    /// The record's headers, in order. Keys may repeat.
    pub fn headers(&self) -> Headers<'a> {
        Headers::from_raw(self.headers, self.header_count)
    }

    /// The encoded headers and their number (validated when the record was read).
    pub(crate) fn raw_headers(&self) -> (&'a [u8], u32) {
        (self.headers, self.header_count)
    }
}

/// One record header, as written ([`ProducerRecord::headers`](crate::ProducerRecord)) and as
/// read ([`ConsumerRecord::headers`](crate::ConsumerRecord::headers)). Kafka's header keys are
/// strings; they are handed out as stored bytes ([`Header::key_str`] where text is wanted),
/// since a Kafka client may have written any bytes.
///
/// ```
/// use rivulet::Header;
/// let trace = Header::new("trace", b"7f3a");
/// assert_eq!((trace.key_str(), trace.value), (Some("trace"), Some(&b"7f3a"[..])));
/// assert_eq!(Header::null("deleted-by").value, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header's key.
    pub key: &'a [u8],
    /// The header's value; `None` is null.
    pub value: Option<&'a [u8]>,
}

impl<'a> Header<'a> {
    /// A header with a value.
    pub fn new(key: &'a str, value: &'a [u8]) -> Self {
        Header {
            key: key.as_bytes(),
            value: Some(value),
        }
    }

    /// A header whose value is null.
    pub fn null(key: &'a str) -> Self {
        Header {
            key: key.as_bytes(),
            value: None,
        }
    }

    /// The key as text, if it is UTF-8 (as every Kafka client writes it).
    pub fn key_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.key).ok()
    }

    /// An owned copy.
    pub fn to_owned_header(&self) -> OwnedHeader {
        OwnedHeader {
            key: String::from_utf8_lossy(self.key).into_owned(),
            value: self.value.map(<[u8]>::to_vec),
        }
    }
}

/// A header that owns its key and value: [`Header`]'s owned form, in an
/// [`OwnedRecord`](crate::OwnedRecord).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedHeader {
    /// The header's key.
    pub key: String,
    /// The header's value; `None` is null.
    pub value: Option<Vec<u8>>,
}

impl OwnedHeader {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        OwnedHeader {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// The header, borrowed.
    pub fn as_header(&self) -> Header<'_> {
        Header {
            key: self.key.as_bytes(),
            value: self.value.as_deref(),
        }
    }
}

/// Iterator over a record's headers (already validated when the record was read).
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    data: &'a [u8],
    left: u32,
}

impl<'a> Headers<'a> {
    /// Headers from bytes validated by `parse_record`.
    pub(crate) fn from_raw(data: &'a [u8], count: u32) -> Self {
        Headers { data, left: count }
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Header<'a>;
    fn next(&mut self) -> Option<Header<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (header, used) = parse_header(self.data).expect("headers are validated when the record is read");
        self.data = &self.data[used..];
        Some(header)
    }
}

/// A position in a record's bytes. Reading advances it; `None` means the bytes ended or an
/// encoding was malformed.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn varint(&mut self) -> Option<i32> {
        // Most lengths, deltas and counts are below 64 in magnitude: one byte.
        let b = *self.buf.get(self.at)?;
        if b < 0x80 {
            self.at += 1;
            return Some(((b >> 1) as i32) ^ -((b & 1) as i32));
        }
        // Two bytes cover values below 8192 in magnitude: most record and value lengths.
        if let Some(&b2) = self.buf.get(self.at + 1)
            && b2 < 0x80
        {
            self.at += 2;
            let z = (b & 0x7f) as u32 | (b2 as u32) << 7;
            return Some(((z >> 1) as i32) ^ -((z & 1) as i32));
        }
        let (v, n) = get_varint(&self.buf[self.at..])?;
        self.at += n;
        Some(v)
    }

    #[inline(always)]
    fn varlong(&mut self) -> Option<i64> {
        let b = *self.buf.get(self.at)?;
        if b < 0x80 {
            self.at += 1;
            return Some(((b >> 1) as i64) ^ -((b & 1) as i64));
        }
        let (v, n) = get_varlong(&self.buf[self.at..])?;
        self.at += n;
        Some(v)
    }

    /// A varint length and that many bytes; -1 is null.
    #[inline(always)]
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.varint()?;
        if len == -1 {
            return Some(None);
        }
        let end = self.at.checked_add(usize::try_from(len).ok()?)?;
        let bytes = self.buf.get(self.at..end)?;
        self.at = end;
        Some(Some(bytes))
    }

    /// A header: a non-null key and a value.
    #[inline]
    fn header(&mut self) -> Option<Header<'a>> {
        let key = self.bytes()??;
        let value = self.bytes()?;
        Some(Header { key, value })
    }
}

fn parse_header(data: &[u8]) -> Option<(Header<'_>, usize)> {
    let mut c = Cursor { buf: data, at: 0 };
    let header = c.header()?;
    Some((header, c.at))
}

/// Parses the record at the start of `data`: the record and the bytes it took.
#[inline(always)]
pub(crate) fn parse_record<'a>(
    data: &'a [u8],
    ctx: &RecordContext,
    index: i32,
) -> Result<(Record<'a>, usize), BatchError> {
    let bad = |reason| BatchError::BadRecord { index, reason };
    let mut c = Cursor { buf: data, at: 0 };
    let len = c.varint().ok_or_else(|| bad("unreadable length"))?;
    let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
    let end = c.at.saturating_add(len);
    if len == 0 || end > data.len() {
        return Err(bad("length runs past the end of the batch or is zero"));
    }
    // The record's own bytes; the attributes byte (unused in v2) comes first.
    let mut c = Cursor {
        buf: &data[..end],
        at: c.at + 1,
    };
    let ts_delta = c.varlong().ok_or_else(|| bad("unreadable timestamp delta"))?;
    let offset_delta = c.varint().ok_or_else(|| bad("unreadable offset delta"))?;
    if offset_delta < 0 || offset_delta > ctx.last_offset_delta {
        return Err(bad("offset delta outside the batch's offset range"));
    }
    let key = c.bytes().ok_or_else(|| bad("unreadable key"))?;
    let value = c.bytes().ok_or_else(|| bad("unreadable value"))?;
    let header_count = c.varint().ok_or_else(|| bad("unreadable header count"))?;
    let header_count = u32::try_from(header_count).map_err(|_| bad("negative header count"))?;
    let headers_start = c.at;
    for _ in 0..header_count {
        c.header().ok_or_else(|| bad("malformed header"))?;
    }
    if c.at != end {
        return Err(bad("length does not match the fields"));
    }
    let timestamp = ctx
        .append_time
        .unwrap_or_else(|| ctx.base_timestamp.wrapping_add(ts_delta));
    Ok((
        Record {
            offset: ctx.base_offset + offset_delta as i64,
            timestamp,
            key,
            value,
            headers: &data[headers_start..end],
            header_count,
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::builder::{BatchBuilder, RecordBatch};

    fn sample(codec: Compression) -> RecordBatch {
        let mut b = BatchBuilder::new(codec).producer(7, 2, 100);
        b.push(1000, Some(b"k1"), Some(b"v1"), &[]);
        b.push(990, None, None, &[Header::new("h", b"x"), Header::null("h")]);
        b.push(1005, Some(b""), Some(&[0u8; 300]), &[]);
        b.finish().unwrap()
    }

    #[test]
    fn crc32c_is_castagnoli_at_every_length_and_alignment() {
        // The catalogue's check value for CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        // Against a bitwise reference on lengths around the SIMD widths, at odd addresses.
        fn reference(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= b as u32;
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0x82f6_3b78
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [
            1, 7, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 4096, 4097,
        ] {
            for start in [0, 1, 3] {
                let bytes = &data[start..start + len];
                assert_eq!(crc32c(bytes), reference(bytes), "length {len} at {start}");
            }
        }
    }

    #[test]
    fn builder_output_parses_back_field_by_field() {
        for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let batch = sample(codec);
            let (view, rest) = Batch::parse(batch.as_bytes()).unwrap();
            assert!(rest.is_empty());
            let h = view.header();
            assert_eq!((h.record_count, h.last_offset_delta), (3, 2));
            assert_eq!((h.base_timestamp, h.max_timestamp), (1000, 1005));
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 2, 100));
            assert_eq!(h.compression().unwrap(), codec);
            let records = view.records().unwrap();
            let got: Vec<_> = records.iter().map(Result::unwrap).collect();
            assert_eq!(got[0].key, Some(&b"k1"[..]));
            assert_eq!(got[1].timestamp, 990);
            assert_eq!((got[1].key, got[1].value), (None, None));
            let headers: Vec<_> = got[1].headers().collect();
            assert_eq!(
                headers,
                [
                    Header {
                        key: b"h",
                        value: Some(b"x")
                    },
                    Header {
                        key: b"h",
                        value: None
                    }
                ]
            );
            assert_eq!(got[2].offset, 2);
            assert_eq!(got[2].value.unwrap().len(), 300);
            // Round trip through the wire-side validation too.
            RecordBatch::from_bytes(batch.as_bytes().to_vec()).unwrap();
        }
    }

    #[test]
    fn a_batch_that_compresses_well_is_not_mistaken_for_an_impossible_count() {
        // Regression: the record count was once checked against the compressed size.
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = BatchBuilder::new(codec);
            for _ in 0..500 {
                b.push(7, Some(b"k"), Some(b"same-same-same"), &[Header::new("h", b"v")]);
            }
            let batch = b.finish().unwrap();
            assert!(
                batch.len() < HEADER_LEN + 500 * MIN_RECORD_LEN,
                "{codec:?} compressed too little to test"
            );
            let (view, _) = Batch::parse(batch.as_bytes()).unwrap();
            assert_eq!(view.records().unwrap().iter().count(), 500, "{codec:?}");
            RecordBatch::from_bytes(batch.into_bytes()).unwrap();
        }
    }

    #[test]
    fn offsets_and_epoch_are_patched_outside_the_crc() {
        let mut batch = sample(Compression::None);
        let crc = batch.header().crc;
        batch.set_base_offset(1 << 40);
        batch.set_partition_leader_epoch(9);
        let (view, _) = Batch::parse(batch.as_bytes()).unwrap();
        assert_eq!(view.header().crc, crc);
        assert_eq!(view.header().base_offset, 1 << 40);
        assert_eq!(view.header().partition_leader_epoch, 9);
        let offsets: Vec<_> = view
            .records()
            .unwrap()
            .iter()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(offsets, [1 << 40, (1 << 40) + 1, (1 << 40) + 2]);
    }

    #[test]
    fn log_append_time_overrides_every_record_timestamp() {
        let mut batch = sample(Compression::None);
        batch.set_log_append_time(5555);
        let (view, _) = Batch::parse(batch.as_bytes()).unwrap();
        assert_eq!(view.header().timestamp_type(), TimestampType::LogAppendTime);
        for r in view.records().unwrap().iter() {
            assert_eq!(r.unwrap().timestamp, 5555);
        }
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let good = sample(Compression::None).into_bytes();

        let mut bad_magic = good.clone();
        bad_magic[MAGIC_AT] = 1;
        assert_eq!(
            Batch::parse(&bad_magic).unwrap_err(),
            BatchError::BadMagic { found: 1 }
        );

        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        assert!(
            matches!(Batch::parse(&bad_crc).unwrap_err(), BatchError::CrcMismatch { expected, actual } if expected != actual)
        );

        let mut bad_len = good.clone();
        bad_len[LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            Batch::parse(&bad_len).unwrap_err(),
            BatchError::LengthOutOfBounds { length: 10, .. }
        ));

        let torn = &good[..good.len() - 1];
        assert_eq!(
            Batch::parse(torn).unwrap_err(),
            BatchError::Incomplete {
                needed: good.len(),
                available: good.len() - 1
            }
        );

        let mut bad_count = good.clone();
        bad_count[RECORD_COUNT_AT..HEADER_LEN].copy_from_slice(&1000i32.to_be_bytes());
        let crc = compute_crc(&bad_count);
        bad_count[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            Batch::parse(&bad_count).unwrap_err(),
            BatchError::BadRecordCount { count: 1000, .. }
        ));

        // A count that fits the offset range but not the records actually present.
        let mut short_count = good.clone();
        short_count[RECORD_COUNT_AT..HEADER_LEN].copy_from_slice(&2i32.to_be_bytes());
        let crc = compute_crc(&short_count);
        short_count[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        let err = RecordBatch::from_bytes(short_count).unwrap_err();
        assert!(matches!(err, BatchError::BadRecordCount { .. }), "{err}");
    }

    #[test]
    fn empty_builder_and_trailing_bytes_are_refused() {
        assert_eq!(
            BatchBuilder::new(Compression::None).finish().unwrap_err(),
            BatchError::Empty
        );
        let mut two = sample(Compression::None).into_bytes();
        two.extend_from_slice(&two.clone());
        assert!(RecordBatch::from_bytes(two).is_err());
    }
}
