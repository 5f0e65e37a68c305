//! Arbitrary bytes through every batch decoder: the borrowed view, the record iterator, and the
//! strict validation of batches received from the wire. None may panic, hang, or allocate
//! beyond the decompression limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rivulet::storage::{Batch, RecordBatch};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((batch, tail)) = Batch::parse(rest) {
        if let Ok(records) = batch.records() {
            for record in records.iter() {
                match record {
                    Ok(r) => {
                        let _ = r.headers().count();
                    }
                    Err(_) => break,
                }
            }
        }
        rest = tail;
    }
    if let Ok(batch) = RecordBatch::from_bytes(data.to_vec()) {
        // What the strict check accepts, the lenient view must read back whole.
        let view = batch.view();
        let records = view.records().expect("validated batch decodes");
        assert_eq!(records.iter().filter(Result::is_ok).count(), records.len());
    }
});
