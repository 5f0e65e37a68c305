//! rivulet side by side with its peers and with probes of the machine, in one run.
//!
//! `cargo run --release -p rivulet-compare` runs everything (about ten minutes) and prints one
//! Markdown table: each DESIGN.md target, rivulet's figure, the peer's or probe's measured
//! alternately with it (A B A B, medians, after untimed warm-ups), the ratio and whether the
//! target is met. `--quick` runs every comparison once at a small size, to check the harness
//! works (CI does); `--dir PATH` puts the scratch files somewhere else than the system's temp
//! directory; `--only engine|latency|servers` runs one part. `memory` runs the memory checks
//! instead (a consumer reading a 10 GiB log; a broker holding 1,000 idle connections).
//!
//! The servers (`redis-server`, `nats-server`, from Debian's packages) are started on loopback
//! ports by the harness and stopped by their PIDs; a comparison whose server is not installed
//! is reported as not measured.

mod engine;
mod measure;
mod probe;
mod report;

use std::path::PathBuf;

use engine::Log;
use measure::Pair;
use report::{Row, Table, Verdict, mb_per_sec, per_sec};

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
}

impl Plan {
    fn full() -> Plan {
        Plan {
            rounds: 7,
            append_records: 1_000_000,
            single_records: 200_000,
            durable_batches: 200,
            replay_records: 1_000_000,
            latency_secs: 3.0,
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
        }
    }
}

struct Args {
    plan: Plan,
    dir: PathBuf,
    only: Option<String>,
    memory: bool,
}

fn args() -> Args {
    let mut out = Args {
        plan: Plan::full(),
        dir: std::env::temp_dir(),
        only: None,
        memory: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => out.plan = Plan::quick(),
            "--dir" => out.dir = PathBuf::from(it.next().expect("--dir takes a path")),
            "--only" => out.only = Some(it.next().expect("--only takes engine, latency or servers")),
            "memory" => out.memory = true,
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
    if args.memory {
        return;
    }
    let mut table = Table::default();
    let wanted = |part: &str| args.only.as_deref().is_none_or(|o| o == part);
    if wanted("engine") {
        eprintln!("embedded log against commitlog and the machine's probes");
        engine_rows(&mut table, root.path(), args.plan);
    }
    println!("{}", table.render());
}

fn engine_rows(table: &mut Table, root: &std::path::Path, plan: Plan) {
    let rounds = plan.rounds;

    // Appends of 100 B in batches of 1,000, no fsync.
    let p = Pair::run(
        rounds,
        || engine::append(Log::Rivulet, root, plan.append_records, 100, 1000),
        || engine::append(Log::Commitlog, root, plan.append_records, 100, 1000),
    );
    table.push(Row {
        what: "append 100 B, batches of 1,000".into(),
        durability: "none",
        ours: per_sec(p.a.median()),
        theirs: format!("commitlog {}", per_sec(p.b.median())),
        ratio: format!("{:.2}x ({:.2}x)", p.ratio(), p.round_ratio()),
        target: ">= 1.2x commitlog".into(),
        verdict: Verdict::from(p.ratio() >= 1.2),
    });

    // Appends of 1 KB in batches of 1,000 against a buffered write of the same value bytes in
    // chunks of one batch.
    let kb_records = plan.append_records / 10;
    let p = Pair::run(
        rounds,
        || engine::append(Log::Rivulet, root, kb_records, 1000, 1000) * 1000.0 / 1e6,
        || probe::buffered_write(root, kb_records * 1000, 1000 * 1000),
    );
    table.push(Row {
        what: "append 1 KB, batches of 1,000 (value bytes)".into(),
        durability: "none",
        ours: mb_per_sec(p.a.median()),
        theirs: format!("buffered write probe {}", mb_per_sec(p.b.median())),
        ratio: format!("{:.2}x ({:.2}x)", p.ratio(), p.round_ratio()),
        target: ">= 0.75x probe".into(),
        verdict: Verdict::from(p.ratio() >= 0.75),
    });

    // One record per call.
    let p = Pair::run(
        rounds,
        || engine::append(Log::Rivulet, root, plan.single_records, 100, 1),
        || engine::append(Log::Commitlog, root, plan.single_records, 100, 1),
    );
    table.push(Row {
        what: "append 100 B, one record per call".into(),
        durability: "none",
        ours: per_sec(p.a.median()),
        theirs: format!("commitlog {}", per_sec(p.b.median())),
        ratio: format!("{:.2}x ({:.2}x)", p.ratio(), p.round_ratio()),
        target: ">= 1.5x commitlog".into(),
        verdict: Verdict::from(p.ratio() >= 1.5),
    });

    // Group commit: batches of 1,000 x 100 B, each made durable, against the probe writing
    // and fdatasyncing the same bytes per batch. The disk's state is probed before and after.
    let before = measure::Percentiles::of(&probe::sync_latency(root, 200));
    let batch_bytes = 1000 * 100;
    let p = Pair::run(
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
    table.push(Row {
        what: format!("append 100 B, batches of 1,000 (100 KB) made durable one by one{slow}"),
        durability: "fsync per batch",
        ours: mb_per_sec(p.a.median()),
        theirs: format!("write+fdatasync probe {}", mb_per_sec(p.b.median())),
        ratio: format!("{:.2}x ({:.2}x)", p.ratio(), p.round_ratio()),
        target: ">= 0.8x probe".into(),
        verdict: Verdict::from(p.ratio() >= 0.8),
    });
    table.push(Row {
        what: "the same, against commitlog (fdatasync by the harness)".into(),
        durability: "fsync per batch",
        ours: per_sec(c.a.median()),
        theirs: format!("commitlog {}", per_sec(c.b.median())),
        ratio: format!("{:.2}x ({:.2}x)", c.ratio(), c.round_ratio()),
        target: String::new(),
        verdict: Verdict::Info,
    });

    // Replay from the page cache.
    let ours = engine::write_for_replay(Log::Rivulet, root, plan.replay_records);
    let theirs = engine::write_for_replay(Log::Commitlog, root, plan.replay_records);
    let p = Pair::run(
        rounds,
        || engine::replay(Log::Rivulet, &ours),
        || engine::replay(Log::Commitlog, &theirs),
    );
    table.push(Row {
        what: "replay 100 B from the page cache".into(),
        durability: "(read)",
        ours: per_sec(p.a.median()),
        theirs: format!("commitlog {}", per_sec(p.b.median())),
        ratio: format!("{:.2}x ({:.2}x)", p.ratio(), p.round_ratio()),
        target: ">= 1.2x commitlog".into(),
        verdict: Verdict::from(p.ratio() >= 1.2),
    });
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
