//! A broker whose topic registry has grown far past a mebibyte (thousands of topics with long
//! names, as auto-creation over the network can make) opens its directory again.

use rivulet::{Broker, TopicConfig};

#[test]
fn a_registry_of_thousands_of_long_named_topics_reopens() {
    // On tmpfs where there is one: the test is about sizes, and fsyncs there cost nothing.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let name = |i: usize| format!("{i:0>249}");
    let count = 4_000;
    {
        let broker = Broker::open(dir.path()).unwrap();
        for i in 0..count {
            broker.create_topic(&name(i), 1, TopicConfig::default()).unwrap();
        }
        broker.close().unwrap();
    }
    let registry: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(registry > 1 << 20, "the registry is {registry} bytes");
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.list_topics().len(), count);
    assert!(broker.describe_topic(&name(count - 1)).is_ok());
}
