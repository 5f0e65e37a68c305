//! The `rivulet` binary, run as a user would: on a data directory no process holds, on one a
//! writer holds (reads through the read-only open, writes refused), on something that is not
//! a data directory, on damaged segments, and against a Kafka broker (`--bootstrap`, the
//! Kafka front end served on 127.0.0.1).
#![cfg(all(feature = "cli", feature = "kafka"))]

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::snapshot;
use rivulet::{Broker, Consumer, ConsumerConfig, Producer, ProducerRecord, TopicConfig, TopicPartition};

/// Runs the binary with `args`, `input` on its standard input.
fn run(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the binary, which must succeed; returns its standard output.
fn ok(args: &[&str], input: &str) -> String {
    let out = run(args, input);
    assert!(
        out.status.success(),
        "rivulet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the binary, which must fail; returns its standard error.
fn fails(args: &[&str]) -> String {
    let out = run(args, "");
    assert!(!out.status.success(), "rivulet {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_directory_no_process_holds() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let d = dir.to_str().unwrap();
    let at = |args: &[&'static str]| [&["--dir", d][..], args].concat();

    ok(
        &at(&[
            "topics",
            "create",
            "meters",
            "--partitions",
            "2",
            "--config",
            "retention.ms=60000",
        ]),
        "",
    );
    let listed = ok(&at(&["topics", "list"]), "");
    assert_eq!(listed, "meters\n");
    ok(
        &at(&[
            "produce",
            "meters",
            "--partition",
            "1",
            "-K",
            ":",
            "-H",
            "unit=kVA",
        ]),
        "house-7:2.3\nhouse-9:1.1\nno key here\n",
    );
    ok(&at(&["produce", "meters", "--partition", "0"]), "first\n");
    let printed = ok(
        &at(&[
            "consume",
            "meters",
            "--partition",
            "1",
            "-F",
            "%p %o %k=%s [%h] %K %S\\n",
        ]),
        "",
    );
    assert_eq!(
        printed,
        "1 0 house-7=2.3 [unit=kVA] 7 3\n1 1 house-9=1.1 [unit=kVA] 7 3\n1 2 =no key here [unit=kVA] -1 11\n"
    );
    assert_eq!(
        ok(&at(&["consume", "meters", "--partition", "1", "-o", "2"]), ""),
        "no key here\n"
    );
    assert_eq!(
        ok(&at(&["consume", "meters", "-o", "latest"]), ""),
        "",
        "nothing past the end"
    );
    assert_eq!(
        ok(&at(&["consume", "meters", "-c", "1", "--partition", "1"]), ""),
        "2.3\n"
    );
    assert_eq!(
        ok(&at(&["consume", "meters", "--from-time", "4102444800000"]), ""),
        ""
    );
    let all = ok(&at(&["consume", "meters", "--from-time", "0", "-F", "%s\\n"]), "");
    assert_eq!(all.lines().count(), 4);

    let described = ok(&at(&["topics", "describe", "meters"]), "");
    assert!(described.contains("retention.ms=60000"), "{described}");
    assert!(
        described.contains("Partition: 1\tStart: 0\tEnd: 3"),
        "{described}"
    );
    ok(
        &at(&["topics", "alter", "meters", "--config", "retention.ms=120000"]),
        "",
    );
    let described = ok(&at(&["topics", "describe", "meters"]), "");
    assert!(described.contains("retention.ms=120000"), "{described}");
    let err = fails(&at(&[
        "topics",
        "alter",
        "meters",
        "--config",
        "retention.ms=soon",
    ]));
    assert!(err.contains("retention.ms"), "{err}");

    // Groups: a reset is only printed until --execute.
    let plan = ok(
        &at(&[
            "groups",
            "reset",
            "billing",
            "--topic",
            "meters",
            "--to-offset",
            "1",
        ]),
        "",
    );
    assert!(plan.contains("billing\tmeters\t1\t1"), "{plan}");
    assert!(plan.contains("not committed"), "{plan}");
    assert_eq!(ok(&at(&["groups", "list"]), ""), "");
    ok(
        &at(&[
            "groups",
            "reset",
            "billing",
            "--topic",
            "meters",
            "--to-offset",
            "1",
            "--execute",
        ]),
        "",
    );
    assert_eq!(ok(&at(&["groups", "list"]), ""), "billing\n");
    let lag = ok(&at(&["groups", "describe", "billing"]), "");
    assert!(lag.contains("billing\tmeters\t0\t1\t1\t0"), "{lag}");
    assert!(lag.contains("billing\tmeters\t1\t1\t3\t2"), "{lag}");
    ok(
        &at(&[
            "groups",
            "reset",
            "billing",
            "--topic",
            "meters",
            "--to-earliest",
            "--execute",
        ]),
        "",
    );
    assert!(ok(&at(&["groups", "describe", "billing"]), "").contains("billing\tmeters\t1\t0\t3\t3"));
    ok(&at(&["groups", "delete", "billing"]), "");
    assert_eq!(ok(&at(&["groups", "list"]), ""), "");
    let err = fails(&at(&["groups", "delete", "billing"]));
    assert!(err.contains("unknown group"), "{err}");

    // Any bytes make a value; CRLF line ends are cut; -c 0 prints nothing.
    let run_with = |args: &[&str], input: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run_with(
        &at(&["produce", "meters", "--partition", "0"]),
        b"\xff\xfe raw\r\nplain\n",
    );
    assert!(out.status.success());
    let raw = run_with(
        &at(&["consume", "meters", "--partition", "0", "-o", "1", "-F", "%s|"]),
        b"",
    );
    assert_eq!(raw.stdout, b"\xff\xfe raw|plain|");
    assert_eq!(ok(&at(&["consume", "meters", "-c", "0"]), ""), "");

    // Segments: dumped and checked.
    let segment = dir.join("meters-1").join("00000000000000000000.log");
    let dumped = ok(&["dump-log", "--print-data", segment.to_str().unwrap()], "");
    assert!(
        dumped.contains("baseOffset: 0 lastOffset: 2 count: 3"),
        "{dumped}"
    );
    assert!(dumped.contains("| offset: 1 "), "{dumped}");
    assert!(dumped.contains("key: house-9 payload: 1.1"), "{dumped}");
    let checked = ok(&at(&["check"]), "");
    assert!(
        checked.contains("meters-1: 1 segments, 1 batches, 3 records, offsets up to 3: ok"),
        "{checked}"
    );

    ok(&at(&["topics", "delete", "meters"]), "");
    assert!(!ok(&at(&["topics", "list"]), "").contains("meters"));
    let err = fails(&at(&["consume", "meters"]));
    assert!(err.contains("unknown topic"), "{err}");
}

#[test]
fn a_directory_a_writer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let writer = Broker::open(dir.path()).unwrap();
    writer.create_topic("jobs", 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&writer);
    for i in 0..10 {
        producer
            .send(ProducerRecord::new("jobs", format!("job-{i}").as_bytes()))
            .unwrap();
    }
    let mut consumer = Consumer::new(&writer, ConsumerConfig::default().group_id("workers"));
    let tp = TopicPartition::new("jobs", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.commit_offsets(&[(tp, 4, "")]).unwrap();

    // Reads go through the read-only open, beside the writer.
    assert_eq!(
        ok(&["--dir", d, "topics", "list"], "")
            .lines()
            .filter(|t| *t == "jobs")
            .count(),
        1
    );
    assert_eq!(
        ok(&["--dir", d, "consume", "jobs", "-o", "8"], ""),
        "job-8\njob-9\n"
    );
    let lag = ok(&["--dir", d, "groups", "describe", "workers"], "");
    assert!(lag.contains("workers\tjobs\t0\t4\t10\t6"), "{lag}");
    assert!(ok(&["--dir", d, "check"], "").contains("(a writer has the directory open): 0 problems"));

    // Writes are refused, and change nothing.
    let before = writer.describe_topic("jobs").unwrap();
    for args in [
        &["produce", "jobs"][..],
        &["topics", "create", "other"],
        &["topics", "delete", "jobs"],
        &["topics", "alter", "jobs", "--config", "retention.ms=1"],
        &[
            "groups",
            "reset",
            "workers",
            "--topic",
            "jobs",
            "--to-earliest",
            "--execute",
        ],
        &["groups", "delete", "workers"],
    ] {
        let err = fails(&[&["--dir", d][..], args].concat());
        assert!(err.contains("open in another process"), "{args:?}: {err}");
    }
    assert_eq!(writer.describe_topic("jobs").unwrap(), before);
    assert_eq!(writer.group_offsets("workers").unwrap()[0].committed.offset, 4);

    // Following: records appended while the CLI waits.
    let follow = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "--dir", d, "consume", "jobs", "--follow", "-o", "latest", "-c", "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for i in 10..13 {
        producer
            .send(ProducerRecord::new("jobs", format!("job-{i}").as_bytes()))
            .unwrap();
    }
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "job-10\njob-11\njob-12\n");
    consumer.close().unwrap();
    writer.close().unwrap();
}

#[test]
fn what_is_not_a_data_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let d = dir.path().to_str().unwrap();
    let before = snapshot(dir.path());
    for args in [
        &["topics", "list"][..],
        &["topics", "create", "t"],
        &["produce", "t"],
        &["consume", "t"],
        &["groups", "list"],
        &["check"],
    ] {
        let err = fails(&[&["--dir", d][..], args].concat());
        assert!(err.contains("is not a rivulet log"), "{args:?}: {err}");
    }
    assert_eq!(snapshot(dir.path()), before, "nothing written");

    // A cluster node's directory is written only through the cluster.
    let node = tempfile::tempdir().unwrap();
    Broker::open(node.path()).unwrap().close().unwrap();
    std::fs::create_dir(node.path().join("cluster")).unwrap();
    let n = node.path().to_str().unwrap();
    let err = fails(&["--dir", n, "topics", "create", "t"]);
    assert!(err.contains("cluster"), "{err}");
    assert_eq!(ok(&["--dir", n, "topics", "list"], ""), "", "reading it is fine");
    let err = fails(&["topics", "list"]);
    assert!(err.contains("--dir") && err.contains("--bootstrap"), "{err}");
    let err = fails(&["dump-log", dir.path().join("notes.txt").to_str().unwrap()]);
    assert!(err.contains("is not a segment file"), "{err}");
}

#[test]
fn check_finds_damage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    {
        let broker = Broker::open(dir.path()).unwrap();
        let config = TopicConfig::default().with_log(rivulet::LogConfig::default().segment_bytes(1024));
        broker.create_topic("t", 1, config).unwrap();
        let producer = Producer::new(&broker);
        for i in 0..100 {
            producer
                .send(ProducerRecord::new("t", format!("value-{i:04}").as_bytes()))
                .unwrap();
        }
        broker.close().unwrap();
    }
    assert!(ok(&["--dir", d, "check"], "").ends_with(": 0 problems\n"));
    let partition = dir.path().join("t-0");
    let mut segments: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2);

    // A torn tail of the active segment is the writer's to cut: a note, not a problem.
    let active = segments.last().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(active).unwrap();
    f.write_all(&[0, 0, 0, 0, 0, 0, 0, 99, 0, 0, 1, 0, 7]).unwrap();
    drop(f);
    let out = ok(&["--dir", d, "check"], "");
    assert!(
        out.contains("note: segment") && out.ends_with(": 0 problems\n"),
        "{out}"
    );

    // A flipped byte in a sealed segment is damage.
    let sealed = &segments[0];
    let mut bytes = std::fs::read(sealed).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(sealed, bytes).unwrap();
    let out = run(&["--dir", d, "check"], "");
    assert!(!out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("DAMAGED") && printed.contains("CRC"),
        "{printed}"
    );
    let out = run(&["dump-log", sealed.to_str().unwrap()], "");
    assert!(!out.status.success(), "a damaged segment fails the dump");
    let dumped = String::from_utf8(out.stdout).unwrap();
    assert!(dumped.contains("Not a whole batch at position"), "{dumped}");
}

#[test]
fn a_kafka_broker_through_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = runtime.spawn(rivulet::kafka::serve(listener, broker.clone(), async {
        stopped.await.ok();
    }));
    let b = addr.as_str();
    let at = |args: &[&'static str]| [&["--bootstrap", b][..], args].concat();

    ok(
        &at(&[
            "topics",
            "create",
            "orders",
            "--partitions",
            "2",
            "--config",
            "retention.ms=60000",
        ]),
        "",
    );
    assert!(ok(&at(&["topics", "list"]), "").lines().any(|t| t == "orders"));
    ok(
        &at(&["produce", "orders", "--partition", "0", "-K", "=", "-H", "h=1"]),
        "a=1\nb=2\nc=3\n",
    );
    let printed = ok(
        &at(&["consume", "orders", "--partition", "0", "-F", "%o %k %s %h\\n"]),
        "",
    );
    assert_eq!(printed, "0 a 1 h=1\n1 b 2 h=1\n2 c 3 h=1\n");
    assert_eq!(
        ok(&at(&["consume", "orders", "-o", "1", "--partition", "0"]), ""),
        "2\n3\n"
    );
    let described = ok(&at(&["topics", "describe", "orders"]), "");
    assert!(
        described.contains("Partition: 0\tStart: 0\tEnd: 3"),
        "{described}"
    );
    assert!(described.contains("retention.ms=60000"), "{described}");
    ok(
        &at(&["topics", "alter", "orders", "--config", "segment.bytes=1048576"]),
        "",
    );
    let described = ok(&at(&["topics", "describe", "orders"]), "");
    assert!(
        described.contains("segment.bytes=1048576") && described.contains("retention.ms=60000"),
        "the other setting kept: {described}"
    );
    ok(
        &at(&[
            "groups",
            "reset",
            "shipping",
            "--topic",
            "orders",
            "--to-offset",
            "2",
            "--execute",
        ]),
        "",
    );
    assert_eq!(broker.group_offsets("shipping").unwrap()[0].committed.offset, 2);
    let lag = ok(&at(&["groups", "describe", "shipping"]), "");
    assert!(lag.contains("shipping\torders\t0\t2\t3\t1"), "{lag}");
    assert!(ok(&at(&["groups", "list"]), "").lines().any(|g| g == "shipping"));
    ok(&at(&["groups", "delete", "shipping"]), "");
    assert!(broker.group_offsets("shipping").unwrap().is_empty());
    // A transaction's marker is never delivered: the consume still ends.
    let mut txn_producer = rivulet::TransactionalProducer::new(&broker, "cli-test").unwrap();
    let mut txn = txn_producer.begin().unwrap();
    txn.send(ProducerRecord::new("orders", b"in-txn").partition(1))
        .unwrap();
    txn.commit().unwrap();
    assert_eq!(
        ok(&at(&["consume", "orders", "--partition", "1"]), ""),
        "in-txn\n"
    );

    ok(&at(&["topics", "delete", "orders"]), "");
    assert!(broker.describe_topic("orders").is_err());

    stop.send(()).unwrap();
    runtime.block_on(served).unwrap().unwrap();
    broker.close().unwrap();
}
