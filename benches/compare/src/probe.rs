//! Probes of the machine: what the disk and the page cache give a plain program, with none
//! of a log's work. The targets for appends and replay are fractions of these, measured in the
//! same run as the log they normalise.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::measure::{histogram, open_loop};

fn create(dir: &Path, name: &str) -> File {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join(name))
        .expect("create a probe file")
}

/// MB/s of writing `total` bytes in `chunk`-byte `write` calls to a new file, no fsync.
pub fn buffered_write(dir: &Path, total: usize, chunk: usize) -> f64 {
    let buf = vec![0x5a_u8; chunk];
    let mut f = create(dir, "probe-buffered");
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        f.write_all(&buf[..n]).expect("probe write");
        left -= n;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(dir.join("probe-buffered")).ok();
    total as f64 / secs / 1e6
}

/// MB/s of writing `total` bytes in `chunk`-byte `write` calls to a new file, no fsync, from
/// one buffer per chunk, all filled before the clock starts, each freed once written: the
/// same bytes handled as a log handles the batches it is handed (each written once, then
/// dropped). `buffered_write`'s one cache-hot buffer is an upper bound no log reaches.
pub fn buffered_write_fresh(dir: &Path, total: usize, chunk: usize) -> f64 {
    let buffers: Vec<Vec<u8>> = (0..total.div_ceil(chunk))
        .map(|c| {
            let len = chunk.min(total - c * chunk);
            (0..len).map(|i| ((c + i) % 251) as u8).collect()
        })
        .collect();
    let mut f = create(dir, "probe-fresh");
    let start = Instant::now();
    for buffer in buffers {
        f.write_all(&buffer).expect("probe write");
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(dir.join("probe-fresh")).ok();
    total as f64 / secs / 1e6
}

/// MB/s of `batches` appends of `batch` bytes, each followed by `fdatasync`.
pub fn write_fdatasync(dir: &Path, batches: usize, batch: usize) -> f64 {
    let buf = vec![0x5a_u8; batch];
    let mut f = create(dir, "probe-sync");
    let start = Instant::now();
    for _ in 0..batches {
        f.write_all(&buf).expect("probe write");
        f.sync_data().expect("probe fdatasync");
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(dir.join("probe-sync")).ok();
    (batches * batch) as f64 / secs / 1e6
}

/// Latency of each of `n` appends of 4 KiB, each followed by `fdatasync`, one after another.
pub fn sync_latency(dir: &Path, n: usize) -> Histogram<u64> {
    let buf = [0x5a_u8; 4096];
    let mut f = create(dir, "probe-latency");
    let mut h = histogram();
    for _ in 0..n {
        let start = Instant::now();
        f.write_all(&buf).expect("probe write");
        f.sync_data().expect("probe fdatasync");
        h.saturating_record(start.elapsed().as_nanos() as u64);
    }
    drop(f);
    std::fs::remove_file(dir.join("probe-latency")).ok();
    h
}

/// Latency of 4 KiB appends with `fdatasync`, due at `rate` per second for `for_how_long`.
pub fn sync_latency_open(dir: &Path, rate: f64, for_how_long: Duration) -> Histogram<u64> {
    let buf = [0x5a_u8; 4096];
    let mut f = create(dir, "probe-latency");
    let h = open_loop(rate, for_how_long, || {
        f.write_all(&buf).expect("probe write");
        f.sync_data().expect("probe fdatasync");
    });
    drop(f);
    std::fs::remove_file(dir.join("probe-latency")).ok();
    h
}

/// A file of `bytes` bytes for `page_cache_read`, read once so it is in the page cache.
pub fn cached_file(dir: &Path, bytes: usize) -> std::path::PathBuf {
    let path = dir.join("probe-read");
    let mut f = create(dir, "probe-read");
    let chunk = vec![0x5a_u8; 1 << 20];
    for _ in 0..bytes.div_ceil(chunk.len()) {
        f.write_all(&chunk).expect("probe write");
    }
    drop(f);
    page_cache_read(&path);
    path
}

/// MB/s of reading a whole file in 1 MiB `read` calls (from the page cache when it is there).
pub fn page_cache_read(path: &Path) -> f64 {
    let mut f = File::open(path).expect("open the probe file");
    let mut buf = vec![0_u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf).expect("probe read");
        if n == 0 {
            break;
        }
        total += n;
    }
    total as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// How the receiving thread of a hand-off probe waits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// It sleeps (`park`) and is woken (`unpark`): the floor under any hand-off to a consumer
    /// that sleeps.
    Wake,
    /// It spins on the shared word, never entering the kernel: the floor under any hand-off
    /// between two threads at all on this machine (what is left is the scheduler's and the
    /// hypervisor's).
    Spin,
}

/// One-way latency of handing a time stamp from one thread to another, due at `rate` per
/// second for `for_how_long`: the sender stamps the time it was due, the receiver records how
/// long it took to see it.
pub fn handoff_latency(rate: f64, for_how_long: Duration, how: Handoff) -> Histogram<u64> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let total = (for_how_long.as_secs_f64() * rate) as u64;
    let origin = Instant::now();
    // Nanoseconds since `origin` of the latest hand-off, 0 while none is pending.
    let stamp = Arc::new(AtomicU64::new(0));
    let receiver = {
        let stamp = stamp.clone();
        std::thread::spawn(move || {
            let mut h = histogram();
            let mut got = 0;
            while got < total {
                match how {
                    Handoff::Wake => std::thread::park(),
                    // Reads only, until there is something to take: a write of the shared line
                    // on every look would slow the sender's store.
                    Handoff::Spin => {
                        while stamp.load(Ordering::Relaxed) == 0 {
                            std::hint::spin_loop();
                        }
                    }
                }
                let sent = stamp.swap(0, Ordering::AcqRel);
                if sent != 0 {
                    let now = origin.elapsed().as_nanos() as u64;
                    h.saturating_record(now.saturating_sub(sent));
                    got += 1;
                }
            }
            h
        })
    };
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(5);
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        crate::measure::wait_until(due);
        // One hand-off pending at a time (a late receiver delays the next, which is then
        // measured from when it was due, as in every open loop here).
        while stamp.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        stamp.store((due - origin).as_nanos().max(1) as u64, Ordering::Release);
        if how == Handoff::Wake {
            receiver.thread().unpark();
        }
    }
    receiver.join().expect("the receiver")
}
