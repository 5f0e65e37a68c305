//! A read from any offset starts at the batch holding it, whatever the batch sizes around it:
//! the lookup walks from the nearest index entry in 4 KiB chunks, and batches larger than a
//! chunk, or straddling two, must not throw it off.

use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
use rivulet::{Fsync, LogConfig};

#[test]
fn every_offset_is_found_across_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    // No index entries at all below 1 MiB: every lookup walks from the segment's start.
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .index_interval_bytes(1 << 20)
        .segment_bytes(1 << 20);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut offset = 0i64;
    while offset < 300 {
        let mut b = BatchBuilder::new(Compression::None);
        for _ in 0..1 + next() % 3 {
            // Mostly small values, some larger than a chunk.
            let len = if next() % 5 == 0 {
                3000 + next() % 6000
            } else {
                next() % 200
            } as usize;
            let mut value = vec![0u8; len.max(8)];
            value[..8].copy_from_slice(&offset.to_be_bytes());
            b.push(0, None, Some(&value), &[]);
            offset += 1;
        }
        log.append(b.finish().unwrap()).unwrap();
    }
    for from in 0..offset {
        let fetch = log.read(from, 1).unwrap();
        let first = fetch.batches().next().expect("a batch");
        let h = first.header();
        assert!(
            h.base_offset <= from && from <= h.last_offset(),
            "read from {from} started at batch {}..={}",
            h.base_offset,
            h.last_offset()
        );
        let mut reader = log.reader(from);
        let r = reader.next().unwrap().unwrap();
        assert_eq!(r.offset, from);
        assert_eq!(r.value.unwrap()[..8], from.to_be_bytes());
    }
    assert!(log.read(offset, 1).unwrap().is_empty());
}
