//! A group shared by a librdkafka consumer and an in-process consumer, both left at their
//! default assignors (librdkafka's `[range, roundrobin]`, rivulet's `[range,
//! cooperative-sticky]` as in Kafka's Java client): they agree on range and split the topic.
#![cfg(feature = "kafka")]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, TopicConfig};
use tokio::net::TcpListener;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_librdkafka_consumer_and_an_in_process_one_at_their_defaults_share_a_group() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("shared", 4, TopicConfig::default())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rivulet::kafka::serve(listener, broker.clone(), async {
        stopped.await.ok();
    }));

    // The in-process member joins first, so the librdkafka one must agree with it.
    let local_broker = broker.clone();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let local = std::thread::spawn(move || -> rivulet::Result<BTreeSet<i32>> {
        let mut c = Consumer::new(&local_broker, ConsumerConfig::default().group_id("shared-group"));
        c.subscribe(["shared"])?;
        let mut owned = BTreeSet::new();
        while finished.try_recv().is_err() {
            c.poll(Duration::from_millis(50))?;
            owned = c.assignment().into_iter().map(|tp| tp.partition as i32).collect();
        }
        Ok(owned)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker
        .describe_group("shared-group")
        .map_or(true, |g| g.members.is_empty())
    {
        assert!(Instant::now() < deadline, "the in-process member never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let remote: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("group.id", "shared-group")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "100")
        .create()?;
    remote.subscribe(&["shared"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let remote_owned = loop {
        let _ = tokio::time::timeout(Duration::from_millis(50), remote.recv()).await;
        let owned: BTreeSet<i32> = remote
            .assignment()?
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        if owned.len() == 2 {
            break owned;
        }
        assert!(Instant::now() < deadline, "the librdkafka consumer has {owned:?}");
    };
    let group = broker.describe_group("shared-group")?;
    assert_eq!((group.members.len(), group.protocol.as_str()), (2, "range"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.send(())?;
    let local_owned = local.join().expect("no panic")?;
    assert_eq!(local_owned.len(), 2);
    assert!(
        remote_owned.is_disjoint(&local_owned),
        "{remote_owned:?} vs {local_owned:?}"
    );
    drop(remote);
    stop.send(()).ok();
    server.await??;
    Ok(())
}
