//! The example broker started with `--config FILE`, a Java properties file with Kafka's names
//! (as a Kafka broker reads `server.properties`): the data directory, the listener, the
//! defaults of auto-created topics and their configs come from the file, flags override it,
//! a setting rivulet has no counterpart for is ignored, and a bad value stops the start with
//! an error naming its line, before anything is written.
//!
//! Needs the example broker built (`cargo build --features kafka,cluster --example broker`;
//! `cargo test --all-features` builds it).
#![cfg(feature = "kafka")]

#[path = "common/copy_loop.rs"]
mod copy_loop;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_the_file_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-the-file");
    let port = free_port();
    let config = dir.path().join("server.properties");
    std::fs::write(
        &config,
        format!(
            "# as Kafka's shipped server.properties, trimmed\n\
             log.dirs={}\n\
             listeners = PLAINTEXT://127.0.0.1:{port}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://localhost:9093\n\
             num.partitions: 3\n\
             num.network.threads=3\n\
             log.retention.hours=168\n\
             log.retention.minutes=90\n\
             log.segment.bytes=1048576\n\
             log.cleanup.policy=compact,\\\n    delete\n\
             group.initial.rebalance.delay.ms=0\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(copy_loop::broker_binary())
        .args(["--config", config.to_str().unwrap(), "--fsync", "never"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the broker did not listen on the file's listener"
        );
        assert!(child.try_wait().unwrap().is_none(), "the broker stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", format!("127.0.0.1:{port}"));

    // An auto-created topic gets the file's num.partitions and log.* defaults.
    let producer: BaseProducer = client.create().unwrap();
    producer
        .send(BaseRecord::to("auto").key("k").payload("v"))
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    let metadata = producer
        .client()
        .fetch_metadata(Some("auto"), Duration::from_secs(30))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 3);

    let admin: AdminClient<DefaultClientContext> = client.create().unwrap();
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic("auto")], &AdminOptions::new())
        .await
        .unwrap();
    let entries = described[0].as_ref().unwrap().entry_map();
    let value = |name: &str| entries[name].value.clone().unwrap();
    // log.retention.minutes wins over log.retention.hours, as in Kafka.
    assert_eq!(value("retention.ms"), (90 * 60_000).to_string());
    assert_eq!(value("segment.bytes"), "1048576");
    assert_eq!(value("cleanup.policy"), "compact,delete");
    // --fsync never overrides the file's (default) flush settings.
    assert_eq!(value("flush.messages"), i64::MAX.to_string());
    drop((admin, producer));

    assert!(
        data.join("auto-0").is_dir(),
        "the data directory is the file's log.dirs"
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("num.network.threads (line 6) has no counterpart"),
        "{log}"
    );
    assert!(log.contains("closed cleanly"), "{log}");
}

#[test]
fn a_bad_value_stops_the_start_and_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("never-made");
    let config = dir.path().join("server.properties");
    std::fs::write(
        &config,
        format!(
            "log.dirs={}\nlisteners=PLAINTEXT://127.0.0.1:0\nlog.segment.bytes=lots\n",
            data.display()
        ),
    )
    .unwrap();
    let out = Command::new(copy_loop::broker_binary())
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: log.segment.bytes"), "{err}");
    assert!(!data.exists(), "nothing is written");

    // A listener of a protocol the broker does not serve, and a missing file.
    std::fs::write(&config, "listeners=SSL://127.0.0.1:9093\n").unwrap();
    let out = Command::new(copy_loop::broker_binary())
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSL is not served"));
    let out = Command::new(copy_loop::broker_binary())
        .args(["--config", dir.path().join("absent").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
