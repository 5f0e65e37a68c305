//! A write that fails with ENOSPC (a short write, then the error) is a clear error that changes
//! nothing: the log is intact, takes appends once there is room, and reopens intact.

mod common;

use std::io::ErrorKind;
use std::sync::Arc;

use common::{read_all, simple_batch};
use rivulet::storage::{FaultyFs, PartitionLog};
use rivulet::{Fsync, LogConfig};

#[test]
fn enospc_changes_nothing_and_the_log_takes_appends_after() {
    for policy in [Fsync::Always, Fsync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let open = |fs: &FaultyFs| {
            PartitionLog::builder(dir.path())
                .config(LogConfig::default().fsync(policy))
                .fs(Arc::new(fs.clone()))
                .open()
                .unwrap()
        };
        let log = open(&fs);
        log.append(simple_batch(0, 4, 1)).unwrap();
        let before = read_all(&log, 0);
        let size = log.size_bytes();

        fs.fail_write_after(0, ErrorKind::StorageFull);
        let err = log.append(simple_batch(4, 4, 2)).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        assert!(
            err.to_string().contains(".log"),
            "the error names the file: {err}"
        );
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(log.size_bytes(), size);
        assert_eq!(read_all(&log, 0), before);
        let on_disk = std::fs::metadata(dir.path().join("00000000000000000000.log"))
            .unwrap()
            .len();
        assert_eq!(on_disk, size, "the short write was cut away");

        // Room again: the same log goes on.
        assert_eq!(log.append(simple_batch(4, 2, 3)).unwrap().base_offset, 4);
        drop(log);
        let log = open(&FaultyFs::new());
        let after = read_all(&log, 0);
        assert_eq!(after.len(), 6);
        assert_eq!(&after[..4], &before[..]);
        assert_eq!(log.append(simple_batch(6, 1, 4)).unwrap().base_offset, 6);
    }
}
