//! Memory checks, each in a child process of its own so that only what it holds is counted:
//! a consumer reading a 10 GiB log, and a broker holding 1,000 idle connections. Figures come
//! from the process's own accounting (`/proc/<pid>/status`): VmHWM is the peak resident set,
//! RssAnon the part that is not file pages (so not page cache mapped in).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, LogConfig, OffsetReset, TopicConfig, TopicPartition};

/// A field of `/proc/<pid>/status` in KiB (`pid` "self" for this process).
pub fn status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs both checks and prints their lines.
pub fn run(root: &Path, gib: u64) {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    eprintln!("writing a log of {gib} GiB (1 KB records, batches of 1,000)");
    let records = write_log(dir.path(), gib << 30);
    let exe = std::env::current_exe().expect("this program's path");
    let out = Command::new(&exe)
        .arg("memory-consume")
        .arg(dir.path())
        .arg(records.to_string())
        .output()
        .expect("run the consumer");
    assert!(
        out.status.success(),
        "the consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    drop(dir);
    idle_connections(&exe, root, 1000);
}

fn topic_config() -> TopicConfig {
    TopicConfig::default().with_log(
        LogConfig::default()
            .fsync(Fsync::Never)
            .segment_bytes(1 << 30)
            .retention_ms(None)
            .retention_bytes(None),
    )
}

/// Writes `bytes` of 1 KB records to topic "t" of a broker in `dir`; returns the record count.
fn write_log(dir: &Path, bytes: u64) -> u64 {
    let broker = Broker::open(dir).expect("open the broker");
    broker
        .create_topic("t", 1, topic_config())
        .expect("create the topic");
    let log = broker.partition("t", 0).expect("the partition");
    let value = vec![0x5a_u8; 1000];
    let batches = bytes / (1000 * 1000);
    for _ in 0..batches {
        let mut b = BatchBuilder::with_capacity(Compression::None, 1000 * 1024);
        for _ in 0..1000 {
            b.push(1_700_000_000_000, None, Some(&value), &[]);
        }
        log.append(b.finish().expect("a batch")).expect("append");
    }
    broker.close().expect("close");
    batches * 1000
}

/// The child's side of the first check: a consumer with default settings reads every record
/// of topic "t" from the start; prints its peak resident set.
pub fn consume(dir: &Path, records: u64) {
    let broker = Broker::open(dir).expect("open the broker");
    let mut c = Consumer::new(
        &broker,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    c.assign(&[TopicPartition::new("t", 0)]).expect("assign");
    let (mut got, mut bytes, mut polls) = (0u64, 0u64, 0u64);
    let mut peak_anon = 0;
    while got < records {
        let batch = c.poll(Duration::from_secs(5)).expect("poll");
        assert!(
            !batch.is_empty() || got == records,
            "the consumer stalled at {got} of {records}"
        );
        for r in batch.iter() {
            got += 1;
            bytes += r.value.map_or(0, <[u8]>::len) as u64;
        }
        polls += 1;
        if polls % 64 == 0 {
            peak_anon = peak_anon.max(status_kib("self", "RssAnon"));
        }
    }
    peak_anon = peak_anon.max(status_kib("self", "RssAnon"));
    println!(
        "consumer read {got} records, {:.1} GiB of values: peak resident {:.1} MiB (VmHWM), peak anonymous {:.1} MiB (RssAnon sampled every 64 polls); target < 64 MiB beyond the page cache",
        bytes as f64 / (1u64 << 30) as f64,
        mib(status_kib("self", "VmHWM")),
        mib(peak_anon)
    );
}

/// The second check: a broker in a child process (`memory-broker`), `n` connections that each
/// make one ApiVersions request and then stay idle; the broker's peak resident set.
fn idle_connections(exe: &Path, root: &Path, n: usize) {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    let mut child = Command::new(exe)
        .arg("memory-broker")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the broker");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("the broker's address");
    let addr = line.trim().to_string();
    let pid = child.id().to_string();
    let before = status_kib(&pid, "VmRSS");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(&addr).expect("connect");
        api_versions(&mut s, i as i32);
        conns.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let held = status_kib(&pid, "VmRSS");
    let peak = status_kib(&pid, "VmHWM");
    println!(
        "broker holding {n} idle connections: resident {:.1} MiB (before them {:.1} MiB), peak {:.1} MiB (VmHWM); target < 256 MiB",
        mib(held),
        mib(before),
        mib(peak)
    );
    drop(conns);
    let _ = child.kill();
    let _ = child.wait();
}

/// One ApiVersions v0 request and its response.
fn api_versions(s: &mut TcpStream, correlation: i32) {
    let mut req = Vec::new();
    req.extend_from_slice(&18_i16.to_be_bytes());
    req.extend_from_slice(&0_i16.to_be_bytes());
    req.extend_from_slice(&correlation.to_be_bytes());
    req.extend_from_slice(&(-1_i16).to_be_bytes());
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    s.write_all(&frame).expect("send ApiVersions");
    let mut len = [0_u8; 4];
    s.read_exact(&mut len).expect("read the response length");
    let mut body = vec![0_u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("read the response");
    assert_eq!(i32::from_be_bytes(body[..4].try_into().unwrap()), correlation);
}

/// The child's side of the second check: serves a broker (from a scratch directory under
/// `root`) on a loopback port, prints the address, and serves until killed.
pub fn serve(root: &Path) {
    let served = crate::broker::start(root, Fsync::Never);
    println!("{}", served.addr);
    std::io::stdout().flush().expect("flush");
    loop {
        std::thread::park();
    }
}
