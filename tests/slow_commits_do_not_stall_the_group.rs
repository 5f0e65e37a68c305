//! On a slow disk an offset commit waits for its `fdatasync`, but nothing else does: the
//! group's other requests are answered meanwhile (the commit holds no lock they need while it
//! waits), and so are other requests to the Kafka front end (the wait is not on a runtime
//! worker).

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivulet::storage::{Fs, FsFile, StdFs};
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, TopicConfig, TopicPartition};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// How long every `fdatasync` of the offsets topic takes.
const SLOW_SYNC: Duration = Duration::from_millis(300);

/// The real file system, with slow syncs of the offsets topic's files.
#[derive(Debug)]
struct SlowOffsetsDisk;

#[derive(Debug)]
struct SlowFile {
    inner: Arc<dyn FsFile>,
    slow: bool,
}

impl Fs for SlowOffsetsDisk {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>> {
        let slow = path.to_string_lossy().contains("__consumer_offsets");
        Ok(Arc::new(SlowFile {
            inner: StdFs.open(path, create)?,
            slow,
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
}

impl FsFile for SlowFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.slow {
            std::thread::sleep(SLOW_SYNC);
        }
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn file(&self) -> &File {
        self.inner.file()
    }
}

fn open(dir: &Path) -> Result<Broker> {
    let broker = Broker::builder(dir)
        .fsync(Fsync::Never)
        .fs(Arc::new(SlowOffsetsDisk))
        .open()?;
    broker.create_topic("t", 1, TopicConfig::default())?;
    Ok(broker)
}

/// A member of `group` that owns t-0, having committed once (the store is open).
fn member(broker: &Broker, group: &str) -> Result<Consumer> {
    let config = ConsumerConfig::default()
        .group_id(group)
        .enable_auto_commit(false);
    let mut c = Consumer::new(broker, config);
    c.subscribe(["t"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.assignment().is_empty() && Instant::now() < deadline {
        c.poll(Duration::from_millis(50))?;
    }
    assert_eq!(c.assignment().len(), 1);
    c.commit_offsets(&[(TopicPartition::new("t", 0), 0, "")])?;
    Ok(c)
}

/// The longest `probe` took, run repeatedly while `busy` runs on another thread.
fn longest_while<T: Send>(busy: impl FnOnce() -> T + Send, mut probe: impl FnMut()) -> (T, Duration) {
    std::thread::scope(|s| {
        let busy = s.spawn(busy);
        std::thread::sleep(Duration::from_millis(20));
        let mut longest = Duration::ZERO;
        while !busy.is_finished() {
            let start = Instant::now();
            probe();
            longest = longest.max(start.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        (busy.join().expect("no panic"), longest)
    })
}

#[test]
fn a_commit_waiting_for_the_disk_does_not_hold_up_its_group() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = open(dir.path())?;
    let mut a = member(&broker, "g")?;
    let (committed, longest) = longest_while(
        || -> Result<(), rivulet::Error> {
            for i in 1..=3 {
                a.commit_offsets(&[(TopicPartition::new("t", 0), i, "")])?;
            }
            Ok(())
        },
        || {
            broker.coordinator().describe("g").expect("known");
        },
    );
    committed?;
    assert!(longest < SLOW_SYNC / 2, "the group was held for {longest:?}");
    assert_eq!(broker.group_offsets("g")?[0].committed.offset, 3);
    Ok(())
}

#[test]
fn deleting_a_group_on_a_slow_disk_does_not_hold_up_other_groups() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = open(dir.path())?;
    let _g = member(&broker, "g")?;
    member(&broker, "h")?.close()?;
    let (deleted, longest) = longest_while(
        || broker.delete_group("h"),
        || {
            broker.coordinator().describe("g").expect("known");
        },
    );
    deleted?;
    assert!(longest < SLOW_SYNC / 2, "other groups were held for {longest:?}");
    assert!(broker.group_offsets("h")?.is_empty());
    Ok(())
}

#[cfg(feature = "kafka")]
#[test]
fn a_commit_over_the_wire_does_not_hold_up_the_runtime() -> Result {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, GroupId, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
        OffsetCommitResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn frame<T: Encodable>(api: ApiKey, version: i16, body: &T) -> BytesMut {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut out, api.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out
    }
    fn exchange(stream: &mut TcpStream, frame: &[u8]) -> io::Result<Bytes> {
        stream.write_all(&(frame.len() as u32).to_be_bytes())?;
        stream.write_all(frame)?;
        let mut len = [0; 4];
        stream.read_exact(&mut len)?;
        let mut buf = vec![0; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    }

    let dir = tempfile::tempdir()?;
    let broker = open(dir.path())?;
    // One runtime thread: a handler that blocks it holds up every connection.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = broker.clone();
    let server = std::thread::spawn(move || {
        runtime.block_on(rivulet::kafka::serve(listener, served, async {
            stopped.await.ok();
        }))
    });
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("standalone")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5),
                ]),
        ]);
    let commit = frame(ApiKey::OffsetCommit, 8, &commit);
    let mut committer = TcpStream::connect(addr)?;
    // The first commit opens the store; the second is the one measured against.
    exchange(&mut committer, &commit)?;
    let mut other = TcpStream::connect(addr)?;
    let versions = frame(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    exchange(&mut other, &versions)?;
    let (reply, answered_in) = std::thread::scope(|s| {
        let committing = s.spawn(|| exchange(&mut committer, &commit));
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        let answered = exchange(&mut other, &versions).map(|_| start.elapsed());
        (committing.join().expect("no panic"), answered)
    });
    let mut reply = reply?;
    ResponseHeader::decode(&mut reply, ApiKey::OffsetCommit.response_header_version(8))?;
    let reply = OffsetCommitResponse::decode(&mut reply, 8)?;
    assert_eq!(reply.topics[0].partitions[0].error_code, 0);
    let answered_in = answered_in?;
    assert!(answered_in < SLOW_SYNC / 2, "ApiVersions waited {answered_in:?}");
    assert_eq!(broker.group_offsets("standalone")?[0].committed.offset, 5);
    let mut listed = exchange(
        &mut other,
        &frame(ApiKey::ListGroups, 4, &ListGroupsRequest::default()),
    )?;
    ResponseHeader::decode(&mut listed, ApiKey::ListGroups.response_header_version(4))?;
    let listed = ListGroupsResponse::decode(&mut listed, 4)?;
    assert_eq!(listed.groups.len(), 1);
    assert_eq!(listed.groups[0].group_id.0.as_str(), "standalone");
    stop.send(()).ok();
    server.join().expect("no panic")?;
    Ok(())
}

#[test]
fn a_group_deleted_while_its_commit_waits_for_the_disk_keeps_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    {
        let broker = open(dir.path())?;
        let tp = TopicPartition::new("t", 0);
        let mut opener = Consumer::new(&broker, ConsumerConfig::default().group_id("other"));
        opener.assign(std::slice::from_ref(&tp))?;
        opener.commit_offsets(&[(tp.clone(), 1, "")])?; // opens the store
        // The group's first commit, still waiting for the disk when the group is deleted.
        let mut c = Consumer::new(&broker, ConsumerConfig::default().group_id("h"));
        c.assign(std::slice::from_ref(&tp))?;
        std::thread::scope(|s| -> Result {
            let committing = s.spawn(|| c.commit_offsets(&[(tp.clone(), 2, "")]));
            std::thread::sleep(SLOW_SYNC / 6);
            broker.delete_group("h")?;
            committing.join().expect("no panic")?;
            Ok(())
        })?;
        assert!(broker.group_offsets("h")?.is_empty());
        broker.close()?;
    }
    let broker = Broker::open(dir.path())?;
    assert!(
        broker.group_offsets("h")?.is_empty(),
        "the deletion covered the commit"
    );
    Ok(())
}
