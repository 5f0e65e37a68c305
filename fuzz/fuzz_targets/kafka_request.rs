//! Arbitrary bytes as a Kafka request frame, through the header and layout checks, the
//! `kafka-protocol` decoders and the handlers (ACLs applied, so that the ACL requests change
//! them and every request is authorized), against a broker with a topic. Nothing may
//! panic, hang or allocate without bound; a bad frame is answered or refused (which closes
//! the connection), and the broker keeps serving.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rivulet::kafka::{Frames, ServerConfig};
use rivulet::{Broker, Fsync, TopicConfig};

struct Harness {
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    frames: Frames,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
        broker.create_topic("t", 3, TopicConfig::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Harness {
            _dir: dir,
            runtime,
            frames: Frames::with_config(broker, ServerConfig::default().acls(true)),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    // Long polls and group waits are cut short: what matters is that nothing breaks.
    let _ = h
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_millis(20), h.frames.answer(data)).await });
});
