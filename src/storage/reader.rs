//! Reading: [`Fetch`], a run of whole stored batches as a reader (or a Kafka Fetch) gets them,
//! and [`LogReader`], which walks records one by one with no copying for uncompressed batches.

use std::time::{Duration, Instant};

use crate::error::{BatchError, Error, Result};
use crate::storage::format::{self, Batch, Compression, HEADER_LEN, Record, RecordContext};
use crate::storage::log::{Oversized, PartitionLog, ReadPin};
use crate::storage::txnindex::AbortedTransaction;

/// Whole batches read from a log, every one of which passed its CRC check.
#[derive(Debug, Clone, Default)]
pub struct Fetch {
    bytes: Vec<u8>,
    high_watermark: i64,
    log_start_offset: i64,
    /// Set by a `read_committed` read.
    committed: Option<Committed>,
}

/// What a `read_committed` read adds to a fetch.
#[derive(Debug, Clone, Default)]
struct Committed {
    last_stable_offset: i64,
    aborted: Vec<AbortedTransaction>,
}

impl Fetch {
    pub(crate) fn new(bytes: Vec<u8>, high_watermark: i64, log_start_offset: i64) -> Self {
        Fetch {
            bytes,
            high_watermark,
            log_start_offset,
            committed: None,
        }
    }

    /// Makes this a `read_committed` read's fetch: read below `last_stable_offset`, of a log
    /// whose high watermark was `high_watermark`, with the transactions aborted in it.
    pub(crate) fn committed(
        mut self,
        high_watermark: i64,
        last_stable_offset: i64,
        aborted: Vec<AbortedTransaction>,
    ) -> Self {
        self.high_watermark = high_watermark;
        self.committed = Some(Committed {
            last_stable_offset,
            aborted,
        });
        self
    }

    /// The last stable offset when the read happened (see
    /// [`PartitionLog::last_stable_offset`]): the end of what a `read_committed` read
    /// returns. The high watermark for any other read.
    pub fn last_stable_offset(&self) -> i64 {
        self.committed
            .as_ref()
            .map_or(self.high_watermark, |c| c.last_stable_offset)
    }

    /// For a `read_committed` read, the transactions aborted among the batches returned:
    /// each one's batches (of that producer, from its first offset up to its ABORT marker)
    /// are to be dropped. Empty for any other read.
    pub fn aborted_transactions(&self) -> &[AbortedTransaction] {
        self.committed.as_ref().map_or(&[], |c| &c.aborted)
    }

    /// The stored bytes: whole RecordBatch v2 batches back to back, as a Kafka Fetch response
    /// carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The stored bytes, consuming the fetch.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// True if no batch was read (the reader is at the high watermark).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The high watermark when the read happened.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The log start offset when the read happened.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The batches, in order.
    pub fn batches(&self) -> impl Iterator<Item = Batch<'_>> {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // Checked when read: only the frame is walked again.
            let (batch, tail) = Batch::parse_trusted(rest);
            rest = tail;
            Some(batch)
        })
    }

    /// The offset after the last batch, if any.
    pub fn next_offset(&self) -> Option<i64> {
        self.batches().last().map(|b| b.header().next_offset())
    }
}

/// Reads records in order from an offset, fetching batches as needed. Records are borrowed
/// from the reader's buffer (decompressed batches are held in a second buffer):
///
/// ```
/// # use rivulet::storage::PartitionLog;
/// # fn f(log: &PartitionLog) -> rivulet::Result<()> {
/// let mut reader = log.reader(0);
/// while let Some(record) = reader.next()? {
///     println!("{} {:?}", record.offset, record.value);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LogReader {
    log: PartitionLog,
    /// The next offset to hand out.
    position: i64,
    fetch_bytes: usize,
    fetch: Fetch,
    /// Position in `fetch` of the next batch to open.
    next_batch: usize,
    current: Option<Current>,
    decompressed: Vec<u8>,
    /// The segment read last, kept so that retention cannot pull it away mid-read.
    pinned: Option<ReadPin>,
}

/// The batch being walked.
#[derive(Debug)]
struct Current {
    ctx: RecordContext,
    /// Where its records are: a range of `fetch`, or all of `decompressed`.
    body: Body,
    at: usize,
    index: i32,
    count: i32,
    /// Records below the reader's position remain to be skipped (first batch after a seek).
    skipping: bool,
    /// The offset after the batch, which may be past its last record (compaction keeps a
    /// batch's offset range).
    next_offset: i64,
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Fetched { start: usize, end: usize },
    Decompressed,
}

/// The default number of bytes a [`LogReader`] fetches at a time.
pub const DEFAULT_FETCH_BYTES: usize = 1 << 20;

impl LogReader {
    pub(crate) fn new(log: PartitionLog, from: i64) -> Self {
        LogReader {
            log,
            position: from,
            fetch_bytes: DEFAULT_FETCH_BYTES,
            fetch: Fetch::default(),
            next_batch: 0,
            current: None,
            decompressed: Vec::new(),
            pinned: None,
        }
    }

    /// Sets how many bytes each fetch reads (default 1 MiB).
    pub fn fetch_bytes(mut self, bytes: usize) -> Self {
        self.fetch_bytes = bytes;
        self
    }

    /// The offset of the next record to be returned (or of the first one after it, where
    /// offsets were compacted away).
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Moves the reader to `offset`.
    pub fn seek(&mut self, offset: i64) {
        self.position = offset;
        self.fetch = Fetch::default();
        self.next_batch = 0;
        self.current = None;
        self.pinned = None;
    }

    /// The next record, or `None` when the reader has caught up with the high watermark.
    #[allow(clippy::should_implement_trait)] // lends from the reader; `Iterator` cannot
    #[inline]
    pub fn next(&mut self) -> Result<Option<Record<'_>>> {
        // Most calls find the next record in the batch already open; `ready` (not inlined)
        // handles the rest.
        let open = matches!(&self.current, Some(cur) if cur.index < cur.count && !cur.skipping);
        if !open && !self.ready()? {
            return Ok(None);
        }
        let cur = self
            .current
            .as_mut()
            .expect("ready() leaves a batch with a record");
        let data = match cur.body {
            Body::Fetched { start, end } => &self.fetch.bytes[start..end],
            Body::Decompressed => &self.decompressed[..],
        };
        let (record, used) =
            format::parse_record(&data[cur.at..], &cur.ctx, cur.index).map_err(Error::InvalidBatch)?;
        cur.at += used;
        cur.index += 1;
        self.position = record.offset + 1;
        Ok(Some(record))
    }

    /// Like [`LogReader::next`], but waits up to `timeout` for a record to arrive.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record<'_>>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready()? {
                return self.next();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.log.wait_for(self.position, left) {
                return Ok(None);
            }
        }
    }

    /// Makes sure a record at or after `position` is next in `current`; false if the reader
    /// is at the high watermark. Skips records below `position` (the first batch of a fetch
    /// may start before it).
    #[inline(never)]
    fn ready(&mut self) -> Result<bool> {
        loop {
            if let Some(cur) = &mut self.current {
                if cur.index < cur.count {
                    let data = match cur.body {
                        Body::Fetched { start, end } => &self.fetch.bytes[start..end],
                        Body::Decompressed => &self.decompressed[..],
                    };
                    if !cur.skipping {
                        return Ok(true);
                    }
                    let (record, used) = format::parse_record(&data[cur.at..], &cur.ctx, cur.index)
                        .map_err(Error::InvalidBatch)?;
                    if record.offset >= self.position {
                        cur.skipping = false;
                        return Ok(true);
                    }
                    cur.at += used;
                    cur.index += 1;
                    continue;
                }
                if cur.at != body_len(cur.body, &self.decompressed) {
                    return Err(Error::InvalidBatch(BatchError::BadRecord {
                        index: cur.count,
                        reason: "bytes left over after the last record",
                    }));
                }
                // Step over offsets compaction removed from the batch's end.
                self.position = self.position.max(cur.next_offset);
                self.current = None;
            }
            if self.next_batch >= self.fetch.bytes.len() {
                let buf = std::mem::take(&mut self.fetch).into_bytes();
                self.fetch = self.log.inner.read_pinned(
                    self.position,
                    self.fetch_bytes,
                    Oversized::Read,
                    &mut self.pinned,
                    buf,
                )?;
                self.next_batch = 0;
                if self.fetch.is_empty() {
                    return Ok(false);
                }
            }
            self.open_batch()?;
        }
    }

    /// Opens the batch at `next_batch` as `current`.
    fn open_batch(&mut self) -> Result<()> {
        let start = self.next_batch;
        let (batch, _) = Batch::parse_trusted(&self.fetch.bytes[start..]);
        let h = *batch.header();
        self.next_batch = start + h.total_len();
        if h.next_offset() <= self.position {
            return Ok(()); // wholly before the position
        }
        let body = if h.compression().map_err(Error::InvalidBatch)? == Compression::None {
            Body::Fetched {
                start: start + HEADER_LEN,
                end: self.next_batch,
            }
        } else {
            let records = batch.records().map_err(Error::InvalidBatch)?;
            self.decompressed = records.into_body().into_owned();
            Body::Decompressed
        };
        self.current = Some(Current {
            ctx: RecordContext::new(&h),
            body,
            at: 0,
            index: 0,
            count: h.record_count,
            skipping: h.base_offset < self.position,
            next_offset: h.next_offset(),
        });
        Ok(())
    }
}

fn body_len(body: Body, decompressed: &[u8]) -> usize {
    match body {
        Body::Fetched { start, end } => end - start,
        Body::Decompressed => decompressed.len(),
    }
}
