//! Helpers shared by the integration tests: owned records and batch construction.
#![allow(dead_code)] // each test file uses a different subset

use std::sync::{Arc, Barrier};

use rivulet::storage::{BatchBuilder, Compression, FaultyFs, PartitionLog, Record, RecordBatch};

/// A record as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Rec {
    pub fn new(timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Rec {
        Rec {
            offset: -1,
            timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        }
    }
}

impl From<Record<'_>> for Rec {
    fn from(r: Record<'_>) -> Rec {
        Rec {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers()
                .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        }
    }
}

/// Builds a batch of `records` (their offsets are ignored).
pub fn batch(records: &[Rec], codec: Compression) -> RecordBatch {
    let mut b = BatchBuilder::new(codec);
    for r in records {
        let headers: Vec<rivulet::Header<'_>> = r
            .headers
            .iter()
            .map(|(k, v)| rivulet::Header {
                key: k,
                value: v.as_deref(),
            })
            .collect();
        b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    b.finish().unwrap()
}

/// A batch of `n` records with values `value-<i>` and timestamp `ts`.
pub fn simple_batch(first: usize, n: usize, ts: i64) -> RecordBatch {
    let recs: Vec<Rec> = (first..first + n)
        .map(|i| {
            Rec::new(
                ts,
                Some(format!("key-{i}").as_bytes()),
                Some(format!("value-{i}").as_bytes()),
            )
        })
        .collect();
    batch(&recs, Compression::None)
}

/// Every record from `from` up to the high watermark.
pub fn read_all(log: &PartitionLog, from: i64) -> Vec<Rec> {
    let mut reader = log.reader(from);
    let mut out = Vec::new();
    while let Some(r) = reader.next().unwrap() {
        out.push(Rec::from(r));
    }
    out
}

/// Polls `ready` every millisecond until it is true or `patience` has passed; returns whether
/// it came true.
pub fn wait_until(patience: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + patience;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Makes compactions of logs on `fs` stop after staging their copies (at the sync of the
/// staging directory), before they install them: the first barrier is passed once a clean
/// is there, the second lets it go on. `fs.before_sync(|_| {})` disarms it.
pub fn pause_cleans_after_staging(fs: &FaultyFs) -> (Arc<Barrier>, Arc<Barrier>) {
    let staged = Arc::new(Barrier::new(2));
    let resume = Arc::new(Barrier::new(2));
    let (s, r) = (staged.clone(), resume.clone());
    fs.before_sync(move |path| {
        if path.ends_with("cleaning") {
            s.wait();
            r.wait();
        }
    });
    (staged, resume)
}

/// Every file under `dir` with its length and modification time: what a step that must
/// change nothing is compared by.
pub fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                files.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    files.sort();
    files
}
