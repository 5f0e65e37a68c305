//! Two reader processes follow a data directory while a writer process appends to it; the
//! writer is SIGKILLed and restarted several times. Each reader must see every acknowledged
//! record, in order, each once, and nothing that the log does not hold after the crashes; an
//! idle reader must not spin.
//!
//! The children are this same test binary, started again with an environment variable set.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::{Broker, Fsync, LogConfig, Producer, ProducerRecord, StartAt, TopicConfig};

const WRITER: &str = "RIVULET_FOLLOW_WRITER_DIR";
const READER: &str = "RIVULET_FOLLOW_READER_DIR";
const TEST_NAME: &str = "readers_follow_a_writer_process";
/// One topic syncs every append; the other's small appends go through a map of the file.
const TOPICS: [&str; 2] = ["synced", "mapped"];

type Key = (String, u32, i64);
/// A child's lines of one kind, as they came.
type Lines = Arc<Mutex<Vec<(Key, String)>>>;

fn writer(dir: &str) {
    let broker = Broker::open(dir).expect("writer opens");
    for (topic, fsync) in TOPICS.iter().zip([Fsync::Always, Fsync::Never]) {
        // Small segments, so that rolls happen under the readers.
        let config =
            TopicConfig::default().with_log(LogConfig::default().fsync(fsync).segment_bytes(16 << 10));
        match broker.create_topic(topic, 2, config) {
            Ok(()) | Err(rivulet::Error::TopicExists { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let producer = Producer::new(&broker);
    let pid = std::process::id();
    for seq in 0u64.. {
        let topic = TOPICS[(seq % 2) as usize];
        let partition = ((seq / 2) % 2) as u32;
        let value = format!("w{pid}-s{seq}");
        let info = producer
            .send(ProducerRecord::new(topic, value.as_bytes()).partition(partition))
            .expect("send");
        // Printed only once acknowledged.
        println!("ack {topic} {partition} {} {value}", info.offset);
        if seq % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn reader(dir: &str) {
    let broker = Broker::open_read_only(dir).expect("reader opens");
    let mut follower = broker.follower().unwrap();
    for topic in TOPICS {
        follower.assign_topic(topic, StartAt::Earliest).unwrap();
    }
    println!("ready");
    loop {
        for r in follower.poll(Duration::from_secs(1)).expect("poll") {
            let value = String::from_utf8(r.value.unwrap()).unwrap();
            println!("got {} {} {} {value}", r.topic, r.partition, r.offset);
        }
    }
}

fn spawn(role: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(role, dir)
        .stdout(Stdio::piped())
        .stderr(if role == READER {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap()
}

/// Collects a child's lines of one kind (`ack` or `got`) as they come.
fn collect(child: &mut Child, kind: &'static str) -> Lines {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let f: Vec<&str> = line.split(' ').collect();
            if f[0] == kind && f.len() == 5 {
                let key = (f[1].to_string(), f[2].parse().unwrap(), f[3].parse().unwrap());
                sink.lock().unwrap().push((key, f[4].to_string()));
            } else if f[0] == "ready" {
                sink.lock()
                    .unwrap()
                    .push((("ready".into(), 0, -1), String::new()));
            }
        }
    });
    lines
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The CPU time a process used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn readers_follow_a_writer_process() {
    if let Ok(dir) = std::env::var(WRITER) {
        writer(&dir);
        return;
    }
    if let Ok(dir) = std::env::var(READER) {
        reader(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    let mut w = spawn(WRITER, dir.path());
    let mut acks = collect(&mut w, "ack");
    wait_until("the first acknowledgement", || !acks.lock().unwrap().is_empty());

    let mut readers: Vec<(Child, Lines)> = (0..2)
        .map(|_| {
            let mut r = spawn(READER, dir.path());
            let got = collect(&mut r, "got");
            (r, got)
        })
        .collect();
    for (_, got) in &readers {
        wait_until("the readers", || !got.lock().unwrap().is_empty());
    }

    // The writer dies at fixed moments, and comes back.
    for delay in [300u64, 700, 150, 500] {
        std::thread::sleep(Duration::from_millis(delay));
        w.kill().unwrap(); // SIGKILL
        w.wait().unwrap();
        // The pipe is read to its end before the acknowledgements are taken.
        std::thread::sleep(Duration::from_millis(100));
        acked.extend(acks.lock().unwrap().drain(..));
        w = spawn(WRITER, dir.path());
        acks = collect(&mut w, "ack");
    }
    std::thread::sleep(Duration::from_millis(300));
    w.kill().unwrap();
    w.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    acked.extend(acks.lock().unwrap().drain(..));
    assert!(
        acked.len() > 100,
        "too few acknowledgements to mean anything: {}",
        acked.len()
    );

    // The log as the crashes left it, read by a writer that opens it now (the readers follow
    // this process's broker from here on).
    let broker = Broker::open(dir.path()).unwrap();
    let mut log: HashMap<Key, String> = HashMap::new();
    let mut ends = BTreeMap::new();
    for topic in TOPICS {
        for p in 0..2 {
            let partition = broker.partition(topic, p).unwrap();
            let mut reader = partition.reader(0);
            while let Some(r) = reader.next().unwrap() {
                let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
                log.insert((topic.to_string(), p, r.offset), value);
            }
            ends.insert((topic.to_string(), p), partition.high_watermark());
        }
    }
    for (key, value) in &acked {
        assert_eq!(
            log.get(key),
            Some(value),
            "acknowledged record {key:?} is in the log"
        );
    }

    for (i, (child, got)) in readers.iter_mut().enumerate() {
        let pid = child.id();
        let count = || got.lock().unwrap().iter().filter(|(k, _)| k.2 >= 0).count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while count() < log.len() {
            if Instant::now() > deadline {
                let got = got.lock().unwrap();
                let mut reached: BTreeMap<(String, u32), i64> = BTreeMap::new();
                for ((t, p, o), _) in got.iter().filter(|(k, _)| k.2 >= 0) {
                    reached.insert((t.clone(), *p), *o + 1);
                }
                panic!("reader {i} reached {reached:?}, the log ends at {ends:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Idle now: a reader waiting for records must not spin.
        let before = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(2));
        let spent = cpu_ticks(pid) - before;
        assert!(
            spent < 50,
            "reader {i} used {spent} ticks of CPU in 2 s of waiting"
        );

        let got = got.lock().unwrap();
        let mut next: BTreeMap<(String, u32), i64> = BTreeMap::new();
        for ((topic, p, offset), value) in got.iter().filter(|(k, _)| k.2 >= 0) {
            let expected = next.entry((topic.clone(), *p)).or_insert(0);
            assert_eq!(
                *offset, *expected,
                "reader {i}: {topic}-{p} in order, each record once"
            );
            *expected += 1;
            let key = (topic.clone(), *p, *offset);
            assert_eq!(
                log.get(&key),
                Some(value),
                "reader {i} saw {key:?} as the log holds it"
            );
        }
        let reached: BTreeMap<_, _> = next.into_iter().collect();
        assert_eq!(reached, ends, "reader {i} reached every partition's end");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    broker.close().unwrap();
    eprintln!(
        "{} records acknowledged across 5 writers; both readers saw all",
        acked.len()
    );
}
