//! A real process appends from several threads and reports every acknowledged batch; the test
//! kills it with SIGKILL at random moments, several times. After each kill the log must hold
//! every acknowledged record, byte for byte, at the offset it was acknowledged at, and nothing
//! that is not a record the child wrote. Run under `Fsync::Always` and under `Fsync::Never`
//! (which promises to survive a process crash: acknowledged records are in the page cache).
//!
//! The child is this same test binary, started again with an environment variable set.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::read_all;
use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
use rivulet::{Fsync, LogConfig};

const CHILD_DIR: &str = "RIVULET_SIGKILL_CHILD_DIR";
const CHILD_POLICY: &str = "RIVULET_SIGKILL_CHILD_POLICY";
const TEST_NAME: &str = "sigkill_loses_no_acknowledged_record";
const THREADS: u32 = 4;

fn config(policy: Fsync) -> LogConfig {
    // Small segments so kills also land around rolls.
    LogConfig::default().segment_bytes(64 << 10).fsync(policy)
}

fn policy_named(name: &str) -> Fsync {
    match name {
        "always" => Fsync::Always,
        "never" => Fsync::Never,
        other => panic!("unknown policy {other}"),
    }
}

/// The value of record `i` of batch `seq` of thread `thread`: self-describing, so the parent
/// can tell a real record from an invented one.
fn value(thread: u32, seq: u64, i: u64) -> Vec<u8> {
    let mut v = format!("t{thread}-s{seq}-r{i}-").into_bytes();
    let filler = (seq * 7 + i * 13) % 200;
    v.extend((0..filler).map(|k| b'a' + ((k + seq) % 26) as u8));
    v
}

fn parse(value: &[u8]) -> Option<(u32, u64, u64)> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.splitn(4, '-');
    let t = parts.next()?.strip_prefix('t')?.parse().ok()?;
    let q = parts.next()?.strip_prefix('s')?.parse().ok()?;
    let r = parts.next()?.strip_prefix('r')?.parse().ok()?;
    Some((t, q, r))
}

fn child(dir: &str, policy: Fsync) {
    let log = PartitionLog::open(dir, config(policy)).expect("child opens the log");
    let start = std::process::id() as u64 * 1_000_000;
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let log = log.clone();
            s.spawn(move || {
                for seq in start.. {
                    let records = 1 + seq % 5;
                    let mut b = BatchBuilder::new(Compression::None);
                    for i in 0..records {
                        b.push(
                            seq as i64,
                            Some(&thread.to_be_bytes()),
                            Some(&value(thread, seq, i)),
                            &[],
                        );
                    }
                    let info = log.append(b.finish().unwrap()).expect("append");
                    // Reported only after `append` returned: acknowledged.
                    println!("ack {thread} {seq} {} {records}", info.base_offset);
                }
            });
        }
    });
}

#[test]
fn sigkill_loses_no_acknowledged_record() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir, policy_named(&std::env::var(CHILD_POLICY).unwrap()));
        return;
    }
    for name in ["always", "never"] {
        kill_and_check(name);
    }
}

fn kill_and_check(policy_name: &str) {
    let policy = policy_named(policy_name);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<(u32, u64), (i64, u64)> = HashMap::new();
    // A fixed sequence of kill delays, so runs differ only by the machine's timing.
    let delays = [40u64, 230, 90, 310, 60, 150];
    for (round, delay) in delays.into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_POLICY, policy_name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ack ") {
                    let f: Vec<i64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                    acks.push(((f[0] as u32, f[1] as u64), (f[2], f[3] as u64)));
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());

        // Reopen (recovering from the kill) and check.
        let log = PartitionLog::open(dir.path(), config(policy)).unwrap();
        let records = read_all(&log, 0);
        assert_eq!(records.len() as i64, log.log_end_offset(), "offsets are dense");
        let mut by_offset = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            let value = r.value.as_deref().unwrap();
            let (t, q, k) =
                parse(value).unwrap_or_else(|| panic!("invented record at {}: {value:?}", r.offset));
            assert_eq!(
                value,
                &self::value(t, q, k)[..],
                "record at {} is damaged",
                r.offset
            );
            assert_eq!(r.key.as_deref(), Some(&t.to_be_bytes()[..]));
            by_offset.insert(r.offset, (t, q, k));
        }
        for (&(t, q), &(base, n)) in &acked {
            for i in 0..n {
                assert_eq!(
                    by_offset.get(&(base + i as i64)),
                    Some(&(t, q, i)),
                    "{policy_name}, round {round}: acknowledged record {i} of batch t{t}-s{q} at offset {} is missing",
                    base + i as i64
                );
            }
        }
        log.close().unwrap();
    }
    eprintln!(
        "{policy_name}: {} batches acknowledged across {} kills",
        acked.len(),
        delays.len()
    );
    assert!(
        acked.len() > 10,
        "too few acknowledgements to mean anything: {}",
        acked.len()
    );
}
