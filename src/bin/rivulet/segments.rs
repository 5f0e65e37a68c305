//! Segment files read directly: `dump-log` prints their batches and records, `check` checks a
//! whole data directory (docs/format.md describes the files).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rivulet::BatchError;
use rivulet::Broker;
use rivulet::storage::{Batch, BatchHeader, HEADER_LEN, frame_len};

use crate::Result;

/// What was found at a position of a segment file.
enum Found {
    /// A whole batch that passed its checks.
    Batch(Vec<u8>),
    /// The file ends here.
    End,
    /// Zeros from here to the end (blocks reserved for appends).
    Zeros,
    /// Something that is not a whole batch: how long the file goes on, and why.
    Bad { rest: u64, why: String },
}

/// Reads the batch at `position` of `file` (`len` bytes long). The frame's length is checked
/// against the file before anything is allocated.
fn batch_at(file: &File, len: u64, position: u64) -> Result<Found> {
    let rest = len - position;
    if rest == 0 {
        return Ok(Found::End);
    }
    let mut head = [0u8; HEADER_LEN];
    let n = (rest as usize).min(HEADER_LEN);
    file.read_exact_at(&mut head[..n], position)?;
    if head[..n].iter().all(|&b| b == 0) && zeros_from(file, len, position)? {
        return Ok(Found::Zeros);
    }
    let total = match frame_len(&head[..n], usize::try_from(rest).unwrap_or(usize::MAX)) {
        Ok(total) => total,
        Err(BatchError::Incomplete { needed, .. }) if needed as u64 <= rest => needed,
        Err(e) => {
            return Ok(Found::Bad {
                rest,
                why: e.to_string(),
            });
        }
    };
    let mut bytes = vec![0u8; total];
    file.read_exact_at(&mut bytes, position)?;
    match Batch::parse(&bytes) {
        Ok(_) => Ok(Found::Batch(bytes)),
        Err(e) => Ok(Found::Bad {
            rest,
            why: e.to_string(),
        }),
    }
}

fn zeros_from(file: &File, len: u64, mut position: u64) -> Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    while position < len {
        let n = ((len - position) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], position)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        position += n as u64;
    }
    Ok(true)
}

fn codec(h: &BatchHeader) -> String {
    h.compression()
        .map_or_else(|e| e.to_string(), |c| format!("{c:?}").to_lowercase())
}

/// Prints every batch of each file (and each record with `print_data`), as kafka-dump-log
/// prints them. Returns how many files hold something that is not a whole batch.
pub fn dump(files: &[PathBuf], print_data: bool, out: &mut impl Write) -> Result<usize> {
    let mut damaged = 0;
    for path in files {
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .is_some_and(|stem| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()));
        if !named {
            return Err(format!("{} is not a segment file (<20-digit offset>.log)", path.display()).into());
        }
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata()?.len();
        writeln!(out, "Dumping {}", path.display())?;
        let mut position = 0;
        loop {
            let bytes = match batch_at(&file, len, position)? {
                Found::Batch(bytes) => bytes,
                Found::End => break,
                Found::Zeros => {
                    writeln!(
                        out,
                        "Zeros from position {position} to the end ({} bytes)",
                        len - position
                    )?;
                    break;
                }
                Found::Bad { rest, why } => {
                    writeln!(
                        out,
                        "Not a whole batch at position {position} ({rest} bytes to the end): {why}"
                    )?;
                    damaged += 1;
                    break;
                }
            };
            let (batch, _) = Batch::parse(&bytes).expect("checked");
            let h = batch.header();
            let last_sequence = match h.base_sequence {
                -1 => -1,
                s => s.wrapping_add(h.last_offset_delta),
            };
            writeln!(
                out,
                "baseOffset: {} lastOffset: {} count: {} baseSequence: {} lastSequence: {last_sequence} \
                 producerId: {} producerEpoch: {} partitionLeaderEpoch: {} isTransactional: {} \
                 isControl: {} position: {position} {}: {} size: {} magic: {} compresscodec: {} crc: {} \
                 isvalid: true",
                h.base_offset,
                h.last_offset(),
                h.record_count,
                h.base_sequence,
                h.producer_id,
                h.producer_epoch,
                h.partition_leader_epoch,
                h.is_transactional(),
                h.is_control(),
                match h.timestamp_type() {
                    rivulet::storage::TimestampType::LogAppendTime => "LogAppendTime",
                    _ => "CreateTime",
                },
                h.max_timestamp,
                bytes.len(),
                h.magic,
                codec(h),
                h.crc,
            )?;
            if print_data {
                let records = match batch.records() {
                    Ok(records) => records,
                    Err(e) => {
                        writeln!(out, "Records of the batch at position {position} unreadable: {e}")?;
                        damaged += 1;
                        break;
                    }
                };
                for r in records.iter() {
                    let r = match r {
                        Ok(r) => r,
                        Err(e) => {
                            writeln!(
                                out,
                                "A record of the batch at position {position} unreadable: {e}"
                            )?;
                            damaged += 1;
                            break;
                        }
                    };
                    let keys: Vec<String> = r
                        .headers()
                        .map(|h| String::from_utf8_lossy(h.key).into_owned())
                        .collect();
                    let size = |b: Option<&[u8]>| b.map_or(-1, |b| b.len() as i64);
                    writeln!(
                        out,
                        "| offset: {} CreateTime: {} keySize: {} valueSize: {} headerKeys: [{}] key: {} payload: {}",
                        r.offset,
                        r.timestamp,
                        size(r.key),
                        size(r.value),
                        keys.join(","),
                        String::from_utf8_lossy(r.key.unwrap_or_default()),
                        String::from_utf8_lossy(r.value.unwrap_or_default()),
                    )?;
                }
            }
            position += bytes.len() as u64;
        }
    }
    Ok(damaged)
}

/// The base offsets of the segments in a partition's directory, sorted.
fn segments(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".log")
            && stem.len() == 20
            && let Ok(base) = stem.parse::<i64>()
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// What checking one segment found.
#[derive(Default)]
struct Segment {
    batches: u64,
    records: u64,
    /// The offset after its last batch.
    next: Option<i64>,
    problems: Vec<String>,
    notes: Vec<String>,
}

/// Checks one segment file: every batch whole, its CRC right, its records readable, offsets
/// rising; then its offset index against the batches found.
fn check_segment(dir: &Path, base: i64, after: i64, active: bool, live: bool) -> Result<Segment> {
    let path = dir.join(format!("{base:020}.log"));
    let mut s = Segment::default();
    let file = match File::open(&path) {
        Ok(file) => file,
        // Retention or compaction removed it after the listing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && live => {
            s.notes.push("removed by the writer while checked".into());
            return Ok(s);
        }
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    let len = file.metadata()?.len();
    let mut starts: HashMap<u64, (i64, i64)> = HashMap::new();
    let mut expected = after;
    let mut position = 0;
    loop {
        let bytes = match batch_at(&file, len, position)? {
            Found::Batch(bytes) => bytes,
            Found::End => break,
            Found::Zeros if active => break,
            Found::Zeros => {
                s.problems
                    .push(format!("zeros from byte {position} of a sealed segment"));
                break;
            }
            Found::Bad { rest, why } if active => {
                let whose = if live {
                    "an append under way, or a crash's"
                } else {
                    "a crash's"
                };
                s.notes.push(format!(
                    "{rest} bytes past the last whole batch ({whose}; the writer's recovery cuts them): {why}"
                ));
                break;
            }
            Found::Bad { why, .. } => {
                s.problems.push(format!("byte {position}: {why}"));
                break;
            }
        };
        let (batch, _) = Batch::parse(&bytes).expect("checked");
        let h = *batch.header();
        if h.base_offset < expected {
            s.problems.push(format!(
                "byte {position}: batch at offset {} after offsets up to {}",
                h.base_offset,
                expected - 1
            ));
        }
        match batch.records() {
            Ok(records) => {
                for r in records.iter() {
                    match r {
                        Ok(_) => s.records += 1,
                        Err(e) => {
                            s.problems.push(format!("byte {position}: {e}"));
                            break;
                        }
                    }
                }
            }
            Err(e) => s.problems.push(format!("byte {position}: {e}")),
        }
        starts.insert(position, (h.base_offset, h.last_offset()));
        expected = h.next_offset();
        s.next = Some(expected);
        s.batches += 1;
        position += bytes.len() as u64;
    }
    // The offset index: each entry names the start of a batch found above, and an offset in it.
    let index = dir.join(format!("{base:020}.index"));
    if let Ok(bytes) = std::fs::read(&index) {
        for (i, entry) in bytes.chunks_exact(8).enumerate() {
            let relative = u32::from_be_bytes(entry[..4].try_into().expect("4 bytes"));
            let at = u32::from_be_bytes(entry[4..].try_into().expect("4 bytes")) as u64;
            if i > 0 && relative == 0 && at == 0 {
                break; // preallocated space of the active segment's index
            }
            let offset = base + relative as i64;
            match starts.get(&at) {
                Some(&(first, last)) if (first..=last).contains(&offset) => {}
                // The writer may have indexed a batch that is not whole on disk yet.
                None if active && at >= position => {}
                _ => {
                    s.problems.push(format!(
                        "{}: entry {i} (offset {offset} at byte {at}) names no batch holding it",
                        index.display()
                    ));
                    break;
                }
            }
        }
    }
    Ok(s)
}

/// Checks every partition of the data directory in `dir`; prints what it found and returns
/// how many problems.
pub fn check(dir: &Path, out: &mut impl Write) -> Result<usize> {
    let reader = Broker::open_read_only(dir)?;
    let live = reader.writer_running()?;
    let mut problems = 0;
    let mut partitions = 0;
    for topic in reader.list_topics()? {
        for p in 0..reader.partition_count(&topic)? {
            partitions += 1;
            let pdir = dir.join(format!("{topic}-{p}"));
            if !pdir.is_dir() {
                writeln!(out, "{topic}-{p}: PROBLEM: the directory is missing")?;
                problems += 1;
                continue;
            }
            let bases = segments(&pdir)?;
            let (mut batches, mut records, mut next) = (0, 0, bases.first().copied().unwrap_or(0));
            let mut found = Vec::new();
            for (i, &base) in bases.iter().enumerate() {
                if base < next {
                    found.push(format!(
                        "PROBLEM: segment {base} starts below the end of the one before ({next})"
                    ));
                }
                let s = check_segment(&pdir, base, base.max(next), i + 1 == bases.len(), live)?;
                batches += s.batches;
                records += s.records;
                next = s.next.unwrap_or(base.max(next));
                found.extend(
                    s.problems
                        .into_iter()
                        .map(|p| format!("PROBLEM: segment {base}: {p}")),
                );
                found.extend(s.notes.into_iter().map(|n| format!("note: segment {base}: {n}")));
            }
            let bad = found.iter().filter(|f| f.starts_with("PROBLEM")).count();
            problems += bad;
            writeln!(
                out,
                "{topic}-{p}: {} segments, {batches} batches, {records} records, offsets up to {next}: {}",
                bases.len(),
                if bad == 0 { "ok" } else { "DAMAGED" }
            )?;
            for f in found {
                writeln!(out, "  {f}")?;
            }
        }
    }
    writeln!(
        out,
        "checked {partitions} partitions{}: {problems} problems",
        if live {
            " (a writer has the directory open)"
        } else {
            ""
        }
    )?;
    Ok(problems)
}
