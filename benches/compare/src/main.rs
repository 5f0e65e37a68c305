//! rivulet side by side with its peers and with probes of the machine, in one run.
//!
//! `cargo run --release -p rivulet-compare` runs everything (about ten minutes) and prints one
//! Markdown table: each of the project's performance targets, rivulet's figure, the peer's or probe's measured
//! alternately with it (A B A B, medians, after untimed warm-ups), the ratio and whether the
//! target is met. `--quick` runs every comparison once at a small size, to check the harness
//! works (CI does); `--dir PATH` puts the scratch files somewhere else than the system's temp
//! directory; `--only engine|latency|servers|cluster|transactions|async|readers` runs one part. `memory` runs the memory checks
//! instead (a consumer reading a 10 GiB log, `--gib N` for another size; a broker holding
//! 1,000 idle connections).
//!
//! The servers (`redis-server`, `nats-server`, from Debian's packages) are started on loopback
//! ports by the harness and stopped by their PIDs; a comparison whose server is not installed
//! is reported as not measured.

mod asynchronous;
mod broker;
mod cluster;
mod engine;
mod inprocess;
mod measure;
mod memory;
mod nats;
mod probe;
mod readers;
mod redis;
mod report;
mod server;
mod transactions;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::Log;
use measure::Pair;
use measure::{Percentiles, interleaved_histograms, one_after_another, open_loop};
use report::{Row, Table, Verdict, mb_per_sec, per_sec};
use rivulet::Fsync;

/// Sizes of one run. The full plan writes about 3 GB in all, each run into a new directory
/// that is removed after it.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub append_records: usize,
    pub single_records: usize,
    pub durable_batches: usize,
    pub replay_records: usize,
    pub latency_secs: f64,
    pub server_records: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            rounds: 9,
            append_records: 1_000_000,
            single_records: 200_000,
            durable_batches: 200,
            replay_records: 1_000_000,
            latency_secs: 3.0,
            server_records: 500_000,
        }
    }

    fn quick() -> Plan {
        Plan {
            rounds: 1,
            append_records: 10_000,
            single_records: 2_000,
            durable_batches: 5,
            replay_records: 10_000,
            latency_secs: 0.2,
            server_records: 5_000,
        }
    }
}

struct Args {
    plan: Plan,
    dir: PathBuf,
    only: Option<String>,
    memory: Option<u64>,
}

fn args() -> Args {
    let mut out = Args {
        plan: Plan::full(),
        dir: std::env::temp_dir(),
        only: None,
        memory: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => out.plan = Plan::quick(),
            "--dir" => out.dir = PathBuf::from(it.next().expect("--dir takes a path")),
            "--only" => {
                out.only =
                    Some(it.next().expect(
                        "--only takes engine, latency, servers, cluster, transactions, async or readers",
                    ))
            }
            "memory" => out.memory = Some(10),
            "--gib" => {
                out.memory = Some(
                    it.next()
                        .and_then(|g| g.parse().ok())
                        .expect("--gib takes a number"),
                )
            }
            // The children of the memory checks.
            "memory-consume" => {
                let dir = PathBuf::from(it.next().expect("a directory"));
                let records = it.next().and_then(|n| n.parse().ok()).expect("a record count");
                memory::consume(&dir, records);
                std::process::exit(0);
            }
            "memory-broker" => {
                memory::serve(Path::new(&it.next().expect("a directory")));
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?}; see the crate documentation (src/main.rs)");
                std::process::exit(2);
            }
        }
    }
    out
}

fn main() {
    let args = args();
    let root = tempfile::Builder::new()
        .prefix("rivulet-compare-")
        .tempdir_in(&args.dir)
        .expect("a scratch directory");
    if let Some(gib) = args.memory {
        memory::run(root.path(), gib);
        return;
    }
    let mut table = Table::default();
    let wanted = |part: &str| args.only.as_deref().is_none_or(|o| o == part);
    if wanted("engine") {
        eprintln!("embedded log against commitlog and the machine's probes");
        engine_rows(&mut table, root.path(), args.plan);
    }
    if wanted("latency") {
        eprintln!("latency, open loop");
        latency_rows(&mut table, root.path(), args.plan);
    }
    if wanted("servers") {
        eprintln!("the broker against Redis Streams and NATS JetStream");
        server_rows(&mut table, root.path(), args.plan);
    }
    if wanted("cluster") {
        eprintln!("a cluster of three nodes against one broker");
        cluster_rows(&mut table, root.path(), args.plan);
    }
    if wanted("transactions") {
        eprintln!("exactly once against at least once");
        transaction_rows(&mut table, root.path(), args.plan);
    }
    if wanted("async") {
        eprintln!("the asynchronous send against the blocking one");
        async_rows(&mut table, root.path(), args.plan);
    }
    if wanted("readers") {
        eprintln!("a read-only follower beside the writer");
        reader_rows(&mut table, root.path(), args.plan);
    }
    println!("{}", table.render());
}

/// One side of a throughput comparison: a run returning its rate.
type Measure<'a> = dyn Fn() -> f64 + 'a;

fn engine_rows(table: &mut Table, root: &Path, plan: Plan) {
    let rounds = plan.rounds;

    // Runs one comparison without fsync and adds its row.
    let mut compare = |what: &str,
                       ours: &Measure,
                       theirs: &Measure,
                       other: &str,
                       unit: fn(f64) -> String,
                       target: Option<f64>| {
        let p = Pair::run(rounds, ours, theirs);
        table.push(Row::compared(what, "none", &p, other, unit, target));
    };

    // Appends of 100 B in batches of 1,000.
    compare(
        "append 100 B, batches of 1,000",
        &|| engine::append(Log::Rivulet, root, plan.append_records, 100, 1000),
        &|| engine::append(Log::Commitlog, root, plan.append_records, 100, 1000),
        "commitlog",
        per_sec,
        Some(1.2),
    );

    // Appends of 1 KB in batches of 1,000 against buffered writes of the same value bytes in
    // chunks of one batch. Judged: the log appending batches built before the clock starts
    // (each dropped by the append that consumes it) against the probe writing buffers filled
    // before the clock starts, each dropped once written. Also shown: each batch built in the
    // loop, and the probe rewriting one cache-hot buffer (an upper bound no log reaches: it
    // never reads fresh memory nor frees any).
    let kb_records = plan.append_records / 10;
    let handed = || engine::append_ready(root, kb_records / 1000, 1000, 1000, Fsync::Never) * 1000.0 / 1e6;
    let fresh = || probe::buffered_write_fresh(root, kb_records * 1000, 1000 * 1000);
    compare(
        "append 1 KB, batches of 1,000 handed to the log (value bytes)",
        &handed,
        &fresh,
        "buffered write probe",
        mb_per_sec,
        Some(0.75),
    );
    compare(
        "the same, each batch built in the loop",
        &|| engine::append(Log::Rivulet, root, kb_records, 1000, 1000) * 1000.0 / 1e6,
        &fresh,
        "buffered write probe",
        mb_per_sec,
        None,
    );
    compare(
        "the same handed to the log, against rewriting one cache-hot 1 MB buffer",
        &handed,
        &|| probe::buffered_write(root, kb_records * 1000, 1000 * 1000),
        "cache-hot write probe",
        mb_per_sec,
        None,
    );

    // One record per call: from one thread, and from four through the producer.
    compare(
        "append 100 B, one record per call",
        &|| engine::append(Log::Rivulet, root, plan.single_records, 100, 1),
        &|| engine::append(Log::Commitlog, root, plan.single_records, 100, 1),
        "commitlog",
        per_sec,
        Some(1.5),
    );
    compare(
        "append 100 B one per call from 4 threads (Producer::send; commitlog behind a mutex)",
        &|| engine::many_senders(Log::Rivulet, root, 4, plan.single_records / 4),
        &|| engine::many_senders(Log::Commitlog, root, 4, plan.single_records / 4),
        "commitlog",
        per_sec,
        Some(1.5),
    );

    // Group commit: batches of 1,000 x 100 B, each made durable, against the probe writing
    // and fdatasyncing the same bytes per batch. The disk's state is probed before and after.
    let before = measure::Percentiles::of(&probe::sync_latency(root, 200));
    let batch_bytes = 1000 * 100;
    let p = Pair::run(
        rounds,
        || engine::append_ready(root, plan.durable_batches, 1000, 100, Fsync::Always) * 100.0 / 1e6,
        || probe::write_fdatasync(root, plan.durable_batches, batch_bytes),
    );
    let built = Pair::run(
        rounds,
        || engine::append_durable(Log::Rivulet, root, plan.durable_batches) * 100.0 / 1e6,
        || probe::write_fdatasync(root, plan.durable_batches, batch_bytes),
    );
    let c = Pair::run(
        rounds,
        || engine::append_durable(Log::Rivulet, root, plan.durable_batches),
        || engine::append_durable(Log::Commitlog, root, plan.durable_batches),
    );
    let after = measure::Percentiles::of(&probe::sync_latency(root, 200));
    let slow = slow_disk(before.p50, after.p50);
    table.push(Row::compared(
        format!("append 100 B, batches of 1,000 (100 KB) handed to the log, each made durable{slow}"),
        "fsync per batch",
        &p,
        "write+fdatasync probe",
        mb_per_sec,
        Some(0.8),
    ));
    table.push(Row::compared(
        "the same, each batch built in the loop",
        "fsync per batch",
        &built,
        "write+fdatasync probe",
        mb_per_sec,
        None,
    ));
    table.push(Row::compared(
        "the same, against commitlog (fdatasync by the harness)",
        "fsync per batch",
        &c,
        "commitlog",
        per_sec,
        None,
    ));

    // Replay from the page cache.
    let ours = engine::write_for_replay(Log::Rivulet, root, plan.replay_records);
    let theirs = engine::write_for_replay(Log::Commitlog, root, plan.replay_records);
    let p = Pair::run(
        rounds,
        || engine::replay(Log::Rivulet, &ours),
        || engine::replay(Log::Commitlog, &theirs),
    );
    table.push(Row::compared(
        "replay 100 B from the page cache",
        "(read)",
        &p,
        "commitlog",
        per_sec,
        Some(1.2),
    ));
    drop((ours, theirs));
    let path = probe::cached_file(root, 256 << 20);
    let read = measure::median(
        &(0..rounds.max(3))
            .map(|_| probe::page_cache_read(&path))
            .collect::<Vec<_>>(),
    );
    std::fs::remove_file(&path).ok();
    table.push(Row {
        what: "page-cache sequential read probe (1 MiB reads)".into(),
        durability: "(read)",
        ours: String::new(),
        theirs: mb_per_sec(read),
        ratio: String::new(),
        target: String::new(),
        verdict: Verdict::Info,
    });
}

/// A mark for a durable row whose disk probe (4 KiB write+fdatasync, p50) was above 1 ms
/// before or after it: the disk was in a slow window and the row should be read with care.
fn slow_disk(before_us: f64, after_us: f64) -> String {
    if before_us > 1000.0 || after_us > 1000.0 {
        format!(" (disk slow: fdatasync p50 {before_us:.0} us before, {after_us:.0} us after)")
    } else {
        String::new()
    }
}

fn async_rows(table: &mut Table, root: &Path, plan: Plan) {
    let rounds = plan.rounds.min(5);
    for (fsync, durability, senders) in [(Fsync::Always, "fsync per batch", 64), (Fsync::Never, "none", 4)] {
        let per = plan.single_records / senders / if fsync == Fsync::Always { 4 } else { 1 };
        let p = Pair::run(
            rounds,
            || asynchronous::tasks(root, fsync, senders, per),
            || asynchronous::threads(root, fsync, senders, per),
        );
        table.push(Row::compared(
            format!(
                "100 B one at a time from {senders} senders: tasks awaiting send_async (2 runtime workers) against threads calling send"
            ),
            durability,
            &p,
            "blocking send",
            per_sec,
            None,
        ));
    }
}

fn reader_rows(table: &mut Table, root: &Path, plan: Plan) {
    let secs = Duration::from_secs_f64(plan.latency_secs);
    let setup = inprocess::setup(root);
    for rate in [1_000.0, 10_000.0] {
        let consumer = Percentiles::of(&inprocess::open_loop(&setup.broker, rate, secs, Duration::ZERO));
        let follower = Percentiles::of(&readers::open_loop(&setup.broker, rate, secs));
        table.push(Row {
            what: format!(
                "follower in a read-only open, open loop at {}: due to send until held (in-process consumer beside)",
                per_sec(rate)
            ),
            durability: "none",
            ours: follower.to_string(),
            theirs: format!("consumer {consumer}"),
            ratio: format!("{:.2}x p50", follower.p50 / consumer.p50),
            target: String::new(),
            verdict: Verdict::Info,
        });
    }
    drop(setup);
    let per = plan.single_records / 4;
    for (what, followers, registered) in [
        (
            "a read-only open that reads nothing (the writer publishes its watermarks)",
            0,
            true,
        ),
        (
            "two read-only followers reading along (on the same two cores)",
            2,
            true,
        ),
    ] {
        let p = Pair::run(
            plan.rounds.min(5),
            || readers::writer_rate(root, 4, per, followers, registered),
            || readers::writer_rate(root, 4, per, 0, false),
        );
        table.push(Row::compared(
            format!("writer, 100 B one at a time from 4 threads, with {what} against none"),
            "none",
            &p,
            "no reader",
            per_sec,
            None,
        ));
    }
}

fn transaction_rows(table: &mut Table, root: &Path, plan: Plan) {
    let n = plan.server_records;
    let p = Pair::run(
        plan.rounds.min(5),
        || transactions::exactly_once(root, n, 100),
        || transactions::at_least_once(root, n, 100),
    );
    table.push(Row::compared(
        "copy loop in process, 100 B, positions committed every 100 ms: exactly once (transactions) against at least once",
        "fsync per batch",
        &p,
        "at least once",
        per_sec,
        Some(0.7),
    ));
    let commits = if plan.rounds > 1 { 1000 } else { 50 };
    let (micros, _) = transactions::commit_cost(root, commits, false);
    let (_, fsyncs) = transactions::commit_cost(root, commits.min(100), true);
    table.push(Row {
        what: format!(
            "one commit: a record and the consumer's position (median of {commits}); fsyncs per commit"
        ),
        durability: "fsync per batch",
        ours: format!("{micros:.0} us, {fsyncs:.1} fsyncs"),
        theirs: String::new(),
        ratio: String::new(),
        target: String::new(),
        verdict: Verdict::Info,
    });
}

fn cluster_rows(table: &mut Table, root: &Path, plan: Plan) {
    let n = plan.server_records / 10;
    let value = [0x5a_u8; 100];
    let one = broker::start(root, Fsync::Always);
    let three = cluster::start(root);
    let rounds = plan.rounds.min(5);
    let p = Pair::run(rounds, || three.produce(n, &value), || one.produce(n, &value));
    table.push(Row::compared(
        "3-node cluster on loopback in one process, librdkafka producer, 100 B, acks=all, against one broker",
        "fsync per batch",
        &p,
        "one broker",
        per_sec,
        Some(0.5),
    ));
    drop(three);
    drop(one);
    let mut times: Vec<f64> = (0..plan.rounds.min(3))
        .map(|_| cluster::start(root).failover())
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    table.push(Row {
        what: format!(
            "failover: the leader stops, to the first write acknowledged again ({} runs)",
            times.len()
        ),
        durability: "fsync per batch",
        ours: format!("{median:.2} s"),
        theirs: String::new(),
        ratio: String::new(),
        target: "< 3 s".to_string(),
        verdict: Verdict::from(median < 3.0),
    });
    // What idle partitions cost: heartbeats are per partition (not yet coalesced).
    let partitions = if plan.rounds > 1 { 200 } else { 20 };
    let per_node = cluster::idle_cost(root, partitions, plan.latency_secs.max(1.0) * 3.0);
    table.push(Row {
        what: format!(
            "idle cost of {partitions} partitions a node (heartbeats every 100 ms); a core holds about {:.0}",
            partitions as f64 / per_node.max(1e-6)
        ),
        durability: "",
        ours: format!("{:.1}% of a core", per_node * 100.0),
        theirs: String::new(),
        ratio: String::new(),
        target: String::new(),
        verdict: Verdict::Info,
    });
}

fn server_rows(table: &mut Table, root: &Path, plan: Plan) {
    let n = plan.server_records;
    let value = [0x5a_u8; 100];
    let broker_round = |served: &broker::Served| {
        let from = served.end_offset();
        let produced = served.produce(n, &value);
        served.wait_visible();
        (produced, served.fetch(from, n))
    };
    if server::installed("redis-server") {
        for (durability, fsync, label, target) in [
            (redis::Durability::Memory, Fsync::Never, "none", Some(2.0)),
            (
                redis::Durability::EverySec,
                Fsync::Interval(Duration::from_secs(1)),
                "fsync every second",
                None,
            ),
            (
                redis::Durability::Always,
                Fsync::Always,
                "fsync per batch",
                Some(2.0),
            ),
        ] {
            let served = broker::start(root, fsync);
            let redis = redis::start(root, durability);
            let mut conn = redis::Conn::new(&redis);
            let (produce, replay) = Pair::run_both(
                plan.rounds,
                || broker_round(&served),
                || {
                    conn.del("s");
                    let start = Instant::now();
                    conn.xadd_pipelined("s", n, 1000, &value);
                    let write = n as f64 / start.elapsed().as_secs_f64();
                    let start = Instant::now();
                    assert_eq!(conn.xrange_all("s", 1000), n, "XRANGE reads every entry");
                    (write, n as f64 / start.elapsed().as_secs_f64())
                },
            );
            table.push(Row::compared(
                "broker, librdkafka producer, 100 B (acks=all), against pipelined XADD (1,000 deep)",
                label,
                &produce,
                "Redis",
                per_sec,
                target,
            ));
            table.push(Row::compared(
                "broker, librdkafka consumer, against XRANGE 1,000 at a time",
                label,
                &replay,
                "Redis",
                per_sec,
                None,
            ));
        }
    } else {
        table.note("redis-server is not installed (apt-get install redis-server): Redis rows not measured");
    }
    if server::installed("nats-server") {
        let served = broker::start(root, Fsync::Never);
        let nats = nats::start(root);
        let mut conn = nats::Conn::new(&nats);
        let (produce, replay) = Pair::run_both(
            plan.rounds,
            || broker_round(&served),
            || {
                conn.create_stream();
                let start = Instant::now();
                conn.publish(n, 1000, &value);
                let write = n as f64 / start.elapsed().as_secs_f64();
                let start = Instant::now();
                assert_eq!(
                    conn.replay(n),
                    n * value.len(),
                    "the consumer delivers every message"
                );
                (write, n as f64 / start.elapsed().as_secs_f64())
            },
        );
        table.push(Row::compared(
            "broker, librdkafka producer, against JetStream publish (file storage, 1,000 in flight)",
            "none",
            &produce,
            "NATS",
            per_sec,
            None,
        ));
        table.push(Row::compared(
            "broker, librdkafka consumer, against a JetStream push consumer",
            "none",
            &replay,
            "NATS",
            per_sec,
            None,
        ));
    } else {
        table.note("nats-server is not installed (apt-get install nats-server): NATS rows not measured");
    }
}

fn latency_rows(table: &mut Table, root: &Path, plan: Plan) {
    let secs = Duration::from_secs_f64(plan.latency_secs);
    let short = secs / 4;

    // In-process produce to consume.
    let setup = inprocess::setup(root);
    inprocess::max_rate(&setup.broker, short);
    let max = inprocess::max_rate(&setup.broker, secs / 2);
    // The default consumer sleeps in poll at once; with `poll_spin` it watches for 20 us first.
    let spin = Duration::from_micros(20);
    for (share, spin) in [(0.5, Duration::ZERO), (0.8, Duration::ZERO), (0.5, spin)] {
        let h = inprocess::open_loop(&setup.broker, max * share, secs, spin);
        let p = Percentiles::of(&h);
        let judged = share == 0.5;
        let consumer = if spin.is_zero() {
            String::new()
        } else {
            format!(", consumer spins {} us before sleeping", spin.as_micros())
        };
        table.push(Row {
            what: format!(
                "in-process produce to consume, open loop at {:.0}% of max ({}){consumer}",
                share * 100.0,
                per_sec(max * share)
            ),
            durability: "none",
            ours: p.to_string(),
            theirs: String::new(),
            ratio: String::new(),
            target: if judged {
                "p50 < 10 us, p99 < 100 us".into()
            } else {
                String::new()
            },
            verdict: if judged {
                Verdict::from(p.p50 < 10.0 && p.p99 < 100.0)
            } else {
                Verdict::Info
            },
        });
    }
    drop(setup);
    for (how, what) in [
        (probe::Handoff::Wake, "waking a sleeping thread"),
        (
            probe::Handoff::Spin,
            "handing a word to a spinning thread (no system calls)",
        ),
    ] {
        let h = probe::handoff_latency(max * 0.5, secs, how);
        table.push(Row {
            what: format!("probe: {what}, open loop at {}", per_sec(max * 0.5)),
            durability: "-",
            ours: String::new(),
            theirs: Percentiles::of(&h).to_string(),
            ratio: String::new(),
            target: String::new(),
            verdict: Verdict::Info,
        });
    }

    // A single durable append against the 4 KiB write+fdatasync probe: one after another,
    // then open loop at the same rates for both.
    let n = (plan.latency_secs * 300.0) as usize;
    let (ours, probe) = interleaved_histograms(
        plan.rounds,
        || engine::durable_single(root, n / plan.rounds.max(1) + 1, None, secs),
        || probe::sync_latency(root, n / plan.rounds.max(1) + 1),
    );
    let (o, p) = (Percentiles::of(&ours), Percentiles::of(&probe));
    table.push(Row {
        what: "single durable append of 100 B, one after another".into(),
        durability: "fsync per record",
        ours: o.to_string(),
        theirs: format!("4 KiB write+fdatasync probe {p}"),
        ratio: format!("p50 {:+.0} us", o.p50 - p.p50),
        target: "p50 within 50 us of probe, p99 < 1 ms".into(),
        verdict: Verdict::from(o.p50 - p.p50 <= 50.0 && o.p99 < 1000.0),
    });
    // The rate of one after another, of the slower of the two.
    let max = 1e6 / p.mean.max(o.mean);
    for share in [0.5, 0.8] {
        let rate = max * share;
        let (ours, probe) = interleaved_histograms(
            plan.rounds.min(3),
            || engine::durable_single(root, 0, Some(rate), secs / 3),
            || probe::sync_latency_open(root, rate, secs / 3),
        );
        let (o, p) = (Percentiles::of(&ours), Percentiles::of(&probe));
        table.push(Row {
            what: format!(
                "single durable append, open loop at {:.0}% of max ({})",
                share * 100.0,
                per_sec(rate)
            ),
            durability: "fsync per record",
            ours: o.to_string(),
            theirs: format!("probe {p}"),
            ratio: format!("p50 {:+.0} us", o.p50 - p.p50),
            target: String::new(),
            verdict: Verdict::Info,
        });
    }

    // One client's request/response against Redis XADD.
    if !server::installed("redis-server") {
        table.note("redis-server is not installed: the broker's request latency is not compared");
        return;
    }
    let served = broker::start(root, Fsync::Never);
    let redis = redis::start(root, redis::Durability::Memory);
    let value = [0x5a_u8; 100];
    let mut ours = broker::RequestLoop::new(&served, &value);
    let mut theirs = redis::Conn::new(&redis);
    let mut buf = Vec::new();
    let per_round = (plan.latency_secs * 2000.0) as usize;
    let (o, p) = interleaved_histograms(
        plan.rounds,
        || one_after_another(per_round, || ours.produce_one()),
        || one_after_another(per_round, || theirs.xadd_one("s", &value, &mut buf)),
    );
    let (o, p) = (Percentiles::of(&o), Percentiles::of(&p));
    table.push(Row {
        what: "broker, one client, Produce of one 100 B record (acks=1), one after another".into(),
        durability: "none",
        ours: o.to_string(),
        theirs: format!("Redis XADD {p}"),
        ratio: format!("p50 {:.2}x, p99 {:.2}x", o.p50 / p.p50, o.p99 / p.p99),
        target: String::new(),
        verdict: Verdict::Info,
    });
    let max = 1e6 / o.mean.max(p.mean);
    for share in [0.5, 0.8] {
        let rate = max * share;
        let (o, p) = interleaved_histograms(
            plan.rounds.min(3),
            || open_loop(rate, secs / 3, || ours.produce_one()),
            || open_loop(rate, secs / 3, || theirs.xadd_one("s", &value, &mut buf)),
        );
        let (o, p) = (Percentiles::of(&o), Percentiles::of(&p));
        let judged = share == 0.5;
        table.push(Row {
            what: format!(
                "broker, one client, open loop at {:.0}% of max ({})",
                share * 100.0,
                per_sec(rate)
            ),
            durability: "none",
            ours: o.to_string(),
            theirs: format!("Redis XADD {p}"),
            ratio: format!("p50 {:.2}x, p99 {:.2}x", o.p50 / p.p50, o.p99 / p.p99),
            target: if judged {
                "p50 and p99 <= Redis".into()
            } else {
                String::new()
            },
            verdict: if judged {
                Verdict::from(o.p50 <= p.p50 && o.p99 <= p.p99)
            } else {
                Verdict::Info
            },
        });
    }
}
