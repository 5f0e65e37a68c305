//! The housekeeper's promises hold whatever else runs beside them: interval fsyncs keep their
//! period while another log compacts, and a panic in one log's background work poisons that
//! log (loudly) and leaves the others served.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{read_all, simple_batch, wait_until};
use rivulet::storage::{FaultyFs, Housekeeper, PartitionLog};
use rivulet::{CleanupPolicy, Error, Fsync, LogConfig};

const PATIENCE: Duration = Duration::from_secs(10);

fn interval_log(dir: &std::path::Path, housekeeper: &Housekeeper) -> PartitionLog {
    PartitionLog::builder(dir)
        .config(LogConfig::default().fsync(Fsync::Interval(Duration::from_millis(10))))
        .housekeeper(housekeeper)
        .open()
        .unwrap()
}

#[test]
fn interval_fsyncs_keep_their_period_while_another_log_compacts() {
    let housekeeper = Housekeeper::new().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // The compacting log's clean stops after staging its copies until the interval log has
    // been synced (or the test's patience runs out).
    let fs = FaultyFs::new();
    let cleaning = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicBool::new(false));
    let (c, s) = (cleaning.clone(), synced.clone());
    fs.before_sync(move |path| {
        if path.ends_with("cleaning") {
            c.store(true, Ordering::SeqCst);
            let until = Instant::now() + PATIENCE;
            while !s.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let compacted = PartitionLog::builder(dirs[0].path())
        .config(
            LogConfig::default()
                .cleanup_policy(CleanupPolicy::Compact)
                .retention_check_interval(Duration::from_millis(10)),
        )
        .fs(Arc::new(fs.clone()))
        .housekeeper(&housekeeper)
        .open()
        .unwrap();
    for _ in 0..3 {
        compacted.append(simple_batch(0, 10, 1_000)).unwrap();
        compacted.roll().unwrap();
    }
    assert!(
        wait_until(PATIENCE, || cleaning.load(Ordering::SeqCst)),
        "the housekeeper never started the clean"
    );
    let interval = interval_log(dirs[1].path(), &housekeeper);
    let info = interval.append(simple_batch(0, 1, 1_000)).unwrap();
    let visible = interval.wait_for(info.base_offset, PATIENCE);
    synced.store(true, Ordering::SeqCst);
    assert!(
        visible,
        "no interval fsync while the other log was being compacted"
    );
    // Then the clean goes on: each key's latest record is left.
    assert!(wait_until(PATIENCE, || read_all(&compacted, 0).len() == 10));
}

#[test]
fn a_panic_in_background_work_poisons_that_log_and_spares_the_others() {
    let housekeeper = Housekeeper::new().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let fs = FaultyFs::new();
    let failing = PartitionLog::builder(dirs[0].path())
        .config(
            LogConfig::default()
                .fsync(Fsync::Never)
                .retention_ms(Some(Duration::from_secs(3600)))
                .retention_check_interval(Duration::from_millis(10)),
        )
        .fs(Arc::new(fs.clone()))
        .housekeeper(&housekeeper)
        .open()
        .unwrap();
    // Old records in a sealed segment: the next retention pass deletes it, and panics.
    failing.append(simple_batch(0, 5, 1_000)).unwrap();
    failing.roll().unwrap();
    let log_dir = dirs[0].path().to_path_buf();
    fs.before_sync(move |path| {
        if path == log_dir {
            panic!("injected: a bug in retention");
        }
    });
    let poisoned = |log: &PartitionLog| match log.append(simple_batch(0, 1, 1_000)) {
        Err(Error::Poisoned { cause, .. }) => Some(cause.to_string()),
        _ => None,
    };
    assert!(
        wait_until(PATIENCE, || poisoned(&failing).is_some()),
        "the panic went unnoticed: the log still takes appends"
    );
    let cause = poisoned(&failing).unwrap();
    assert!(
        cause.contains("panicked") && cause.contains("a bug in retention"),
        "{cause}"
    );
    // The thread lives on: another log's interval fsyncs still happen.
    let interval = interval_log(dirs[1].path(), &housekeeper);
    let info = interval.append(simple_batch(0, 1, 1_000)).unwrap();
    assert!(interval.wait_for(info.base_offset, PATIENCE));
}
