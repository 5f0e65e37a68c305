//! Writes a few batches to a partition log, reads them back, looks one up by time, then
//! reopens the log to show that everything survived.
//!
//! `cargo run --release --example partition_log [DIR]` (DIR defaults to a temporary directory).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
use rivulet::{Fsync, LogConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().join("events-0"), Into::into);
    let config = LogConfig::default()
        .fsync(Fsync::Always)
        .retention_ms(Some(Duration::from_secs(24 * 3600)));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;

    let log = PartitionLog::open(&dir, config.clone())?;
    let start = log.log_end_offset();
    for (i, codec) in [Compression::None, Compression::Zstd, Compression::Lz4]
        .into_iter()
        .enumerate()
    {
        let mut batch = BatchBuilder::new(codec);
        for house in 0..3 {
            let load = format!("{:.2} kVA", 0.4 + (i * 3 + house) as f64 * 0.25);
            batch.push(
                now + i as i64 * 1000,
                Some(format!("house-{house}").as_bytes()),
                Some(load.as_bytes()),
                &[],
            );
        }
        let info = log.append(batch.finish()?)?; // durable when append returns
        println!(
            "appended offsets {}..={} ({codec:?})",
            info.base_offset, info.last_offset
        );
    }

    let mut reader = log.reader(start);
    while let Some(r) = reader.next()? {
        let key = String::from_utf8_lossy(r.key.unwrap_or_default());
        let value = String::from_utf8_lossy(r.value.unwrap_or_default());
        println!("  offset {:>3}  {key}  {value}", r.offset);
    }
    if let Some(hit) = log.offset_for_timestamp(now + 1500)? {
        println!("first record at or after now + 1.5 s: offset {}", hit.offset);
    }
    log.close()?;
    drop(log);

    let log = PartitionLog::open(&dir, config)?;
    println!(
        "reopened {}: offsets {}..{}, {} bytes in {} segment(s)",
        dir.display(),
        log.log_start_offset(),
        log.log_end_offset(),
        log.size_bytes(),
        log.segment_count()
    );
    Ok(())
}
