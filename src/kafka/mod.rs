//! The Kafka wire protocol over a [`Broker`] (cargo feature `kafka`): Kafka's clients and tools
//! (librdkafka and kcat, the Java client, kafka-python) produce to it, fetch from it and join
//! its consumer groups, sharing them with in-process [`Consumer`](crate::Consumer)s.
//!
//! [`serve`] runs on tokio and answers requests with the `kafka-protocol` crate's schemas:
//!
//! - produced batches are checked (frame, CRC-32C, record count and offsets) and stored as
//!   received (compressed again only for a topic whose `compression.type` names another
//!   codec), their offsets assigned by patching the header; fetches hand the stored batches
//!   back as they are, never re-encoded;
//! - one broker (node 0) leads every partition; the high watermark is what the log has made
//!   durable under its fsync policy, so acks 1 and -1 mean the same;
//! - idempotent producers get producer ids, and retried batches are not written twice;
//! - groups go through the broker's [`GroupCoordinator`](crate::group::GroupCoordinator),
//!   committed offsets through its offset store;
//! - each connection is served one request at a time, in order (as Kafka does: a client that
//!   wants requests in parallel opens more connections).
//!
//! The API versions served are those [`API_VERSIONS`] lists, which is what ApiVersions
//! advertises.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let broker = rivulet::Broker::open("./data").expect("open");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9092").await?;
//! rivulet::kafka::serve(listener, broker, async {
//!     tokio::signal::ctrl_c().await.ok();
//! })
//! .await
//! # }
//! ```

mod acls;
mod admin;
mod alter_configs;
mod apis;
mod broker_configs;
mod codes;
mod conn;
mod describe_configs;
mod fetch;
mod groups;
mod guard;
mod idempotence;
mod metadata;
mod placement;
mod produce;
mod scram;
mod single_node;
mod txn;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::Broker;

pub use acls::{MAX_ACL_FIELD_BYTES, MAX_ACLS};
pub use apis::API_VERSIONS;
pub use idempotence::MAX_PRODUCER_IDS;

/// Settings of the Kafka front end.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    advertised: Option<(String, u16)>,
    max_frame_bytes: usize,
    max_connections: usize,
    connections_max_idle: Duration,
    producer_id_expiration: Duration,
    cluster_id: String,
    acls: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            advertised: None,
            max_frame_bytes: 100 << 20,
            max_connections: 1024,
            connections_max_idle: Duration::from_secs(600),
            producer_id_expiration: Duration::from_secs(24 * 3600),
            cluster_id: "rivulet".to_string(),
            acls: false,
        }
    }
}

impl ServerConfig {
    /// The host and port clients are told to connect to (Kafka's `advertised.listeners`).
    /// Default: the address the listener is bound to. A dynamic `advertised.listeners`, set
    /// over the wire (IncrementalAlterConfigs on broker "0"), overrides it for every server of
    /// the broker until it is deleted, also after restarts, as a Kafka broker's dynamic
    /// settings override its `server.properties`.
    pub fn advertised(mut self, host: impl Into<String>, port: u16) -> Self {
        self.advertised = Some((host.into(), port));
        self
    }

    /// The largest request accepted (`socket.request.max.bytes`, default 100 MiB): a larger
    /// one closes its connection before anything is read into memory.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// The most connections served at once (default 1,024); more are closed as they arrive.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// `connections.max.idle.ms`: a connection that sends nothing for this long between or
    /// inside requests, or takes none of a response for this long, is closed (default 10
    /// minutes, as in Kafka), so departed clients do not
    /// hold the connection slots of [`max_connections`](Self::max_connections). A request being
    /// answered does not count as idle; a long-polling Fetch waits at most [`FETCH_MAX_WAIT`].
    pub fn connections_max_idle(mut self, idle: Duration) -> Self {
        self.connections_max_idle = idle.max(Duration::from_millis(1));
        self
    }

    /// `producer.id.expiration.ms`: an idempotent producer's id, and its state in every
    /// partition, are forgotten after this long without a batch or InitProducerId (default
    /// one day, as in Kafka); its next batch gets `UNKNOWN_PRODUCER_ID` and it asks for a new
    /// id. See also [`MAX_PRODUCER_IDS`].
    pub fn producer_id_expiration(mut self, idle: Duration) -> Self {
        self.producer_id_expiration = idle.max(Duration::from_millis(1));
        self
    }

    /// The cluster id Metadata reports (default "rivulet").
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = id.into();
        self
    }

    /// Whether ACLs are kept and applied (default no, as a Kafka broker without an authorizer:
    /// ACL requests are answered SECURITY_DISABLED and every client may do everything). Every
    /// server of a broker should say the same: the ACLs are the broker's, and a server that
    /// does not apply them lets its clients do anything.
    ///
    /// With ACLs, requests are authorized as Kafka's authorizer does with
    /// `allow.everyone.if.no.acl.found=true`: a resource no ACL names is open to every client;
    /// once ACLs name it, only what they allow is, and a DENY wins. Every client is the
    /// principal `User:ANONYMOUS` (the front end authenticates no one), known by its IP
    /// address as the ACL host. The ACLs are kept in the data directory (`acls.meta`) and
    /// shared by every server of the broker. There are no super users: an ACL that denies
    /// the cluster's ALTER to every client is undone by stopping the broker and deleting
    /// `acls.meta`.
    pub fn acls(mut self, enabled: bool) -> Self {
        self.acls = enabled;
        self
    }
}

/// What every connection shares.
#[derive(Debug)]
struct Server {
    broker: Broker,
    config: ServerConfig,
    producers: idempotence::Producers,
    /// Permits for produce requests whose batches are decompressed or compressed again.
    inflating: tokio::sync::Semaphore,
    /// The address this server was configured to advertise.
    configured: (String, u16),
    shared: Arc<Shared>,
}

/// What the front end keeps once per broker, however many servers share it: ACLs, SCRAM
/// credentials and the broker's dynamic settings, each with its file in the data directory.
#[derive(Debug)]
struct Shared {
    acls: acls::Acls,
    scram: scram::Credentials,
    settings: broker_configs::BrokerConfigs,
}

impl Shared {
    /// The broker's shared front-end state, opened by its first server.
    fn of(broker: &Broker) -> crate::Result<Arc<Shared>> {
        let mut slot = broker.inner.front_end.lock();
        if let Some(shared) = slot.clone().and_then(|s| s.downcast::<Shared>().ok()) {
            return Ok(shared);
        }
        let dir = broker.dir();
        let shared = Arc::new(Shared {
            acls: acls::Acls::open(dir)?,
            scram: scram::Credentials::open(dir)?,
            settings: broker_configs::BrokerConfigs::open(dir)?,
        });
        *slot = Some(shared.clone());
        Ok(shared)
    }
}

/// Answers request frames as a connection would, without a socket: for fuzzing the request
/// decoder and handlers. Serving goes through [`serve`].
#[doc(hidden)]
#[derive(Debug)]
pub struct Frames {
    server: Arc<Server>,
}

#[doc(hidden)]
impl Frames {
    /// Frames for `broker`, advertised as 127.0.0.1:9092.
    pub fn new(broker: Broker) -> Frames {
        Frames::with_config(broker, ServerConfig::default())
    }

    /// Frames for `broker` served with `config` (ACLs on, say), advertised as 127.0.0.1:9092.
    pub fn with_config(broker: Broker, config: ServerConfig) -> Frames {
        Frames {
            server: Arc::new(
                Server::new(broker, ("127.0.0.1".to_string(), 9092), config)
                    .expect("the broker's ACLs, credentials and settings are readable"),
            ),
        }
    }

    /// The response to one request frame (without its length prefix); `None` when none is
    /// sent (a produce with acks 0); an error when the connection would be closed.
    pub async fn answer(&self, frame: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if frame.len() > self.server.config.max_frame_bytes {
            return Err("oversized".to_string());
        }
        let client = acls::Client {
            host: "127.0.0.1".to_string(),
        };
        conn::handle(&self.server, &client, bytes::Bytes::copy_from_slice(frame))
            .await
            .map(|r| r.map(|b| b.to_vec()))
    }
}

impl Server {
    fn new(broker: Broker, (host, port): (String, u16), config: ServerConfig) -> crate::Result<Server> {
        let node = node_of(&broker);
        Ok(Server {
            shared: Shared::of(&broker)?,
            configured: (host, port),
            broker,
            producers: idempotence::Producers::of_node(config.producer_id_expiration, node),
            inflating: tokio::sync::Semaphore::new(PRODUCE_INFLATING_AT_ONCE),
            config,
        })
    }

    /// The host and port clients are told to connect to.
    fn advertised(&self) -> (String, u16) {
        self.shared.settings.advertised(&self.configured)
    }

    /// The authorized-operations field for `client` on a resource: a bit for each of
    /// `operations` it may do. On the cluster, nothing unless it may DESCRIBE it, as Kafka
    /// answers.
    fn operations(&self, client: &acls::Client, resource_type: i8, name: &str, operations: &[i8]) -> i32 {
        if resource_type == acls::resource::CLUSTER && !client.may_on_cluster(self, acls::op::DESCRIBE) {
            return 0;
        }
        operations
            .iter()
            .filter(|&&o| client.may(self, o, resource_type, name))
            .fold(0, |bits, &o| bits | (1 << o))
    }

    /// A partition's log by the wire's `i32` index (a negative one is unknown).
    fn log(&self, topic: &str, partition: i32) -> crate::Result<crate::storage::PartitionLog> {
        let index = u32::try_from(partition).unwrap_or(u32::MAX);
        self.broker.partition(topic, index)
    }
}

/// The most record bytes one Fetch response carries, whatever the request's `max_bytes` asks
/// for: Kafka's broker setting `fetch.max.bytes` at its default, 55 MiB. As in Kafka, the first
/// batch of a response is returned whole even when it is larger.
pub const FETCH_MAX_BYTES: usize = 55 << 20;

/// The longest a Fetch long-polls for data, whatever its `max_wait_ms` asks for (30 s, the
/// default request timeout of Kafka's clients): it then answers with what there is. A client
/// that closes its connection during the wait ends it at once.
pub const FETCH_MAX_WAIT: Duration = Duration::from_secs(30);

/// How many times its topic's `max.message.bytes` a produced batch may take once
/// decompressed (32, so 32 MiB at the default of 1 MiB; never more than
/// [`MAX_DECOMPRESSED_BYTES`](crate::storage::MAX_DECOMPRESSED_BYTES), 128 MiB). Decompression
/// stops as soon as the output passes it, and the batch's record set is refused with
/// `INVALID_RECORD`, nothing of it written. Producers fill batches up to about
/// `max.message.bytes` before compression, so real batches stay far below it.
pub const PRODUCE_DECOMPRESSION_RATIO: usize = 32;

/// How many produce requests have their batches decompressed (or compressed again, for a
/// topic's `compression.type`) at once; others wait their turn. Each holds one batch's
/// records uncompressed at a time, up to [`PRODUCE_DECOMPRESSION_RATIO`] times its topic's
/// `max.message.bytes` and as much again while compressing: with tokio's blocking pool of up
/// to 512 threads, unbounded, that could be tens of GiB.
pub const PRODUCE_INFLATING_AT_ONCE: usize = 8;

/// The largest response sent (256 MiB): a request whose response would be larger closes its
/// connection, with a warning in the log, before the response is encoded. Responses are
/// otherwise bounded by the request's size, by [`FETCH_MAX_BYTES`], or by what the broker
/// holds (Metadata, DescribeGroups and DescribeConfigs answer a name asked for more than once
/// once); this limit bounds the last kind too, and keeps every frame's length within its
/// `i32`.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// The broker's node id in its cluster, if it is a cluster's node.
fn node_of(broker: &Broker) -> Option<i32> {
    #[cfg(feature = "cluster")]
    if let Some(c) = broker.inner.cluster.get() {
        return Some(i32::try_from(c.node_id()).unwrap_or(i32::MAX));
    }
    let _ = broker;
    None
}

/// How often expired producer ids are swept away, at most.
const PRODUCER_SWEEP: Duration = Duration::from_secs(60);

/// How often group membership deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

/// Serves the Kafka protocol on `listener` with the default [`ServerConfig`] until `shutdown`
/// completes; then closes every connection and returns. The broker stays open (close it
/// after, to shut its logs down cleanly).
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, broker, ServerConfig::default(), shutdown).await
}

/// [`serve`] with settings.
pub async fn serve_with(
    listener: TcpListener,
    broker: Broker,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let (host, port) = config
        .advertised
        .clone()
        .unwrap_or_else(|| (local.ip().to_string(), local.port()));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let server = Arc::new(Server::new(broker, (host, port), config).map_err(io::Error::other)?);
    let ticker = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            let sweep_every = (server.config.producer_id_expiration / 2).min(PRODUCER_SWEEP);
            let mut swept = tokio::time::Instant::now();
            loop {
                every.tick().await;
                // A group's lock may be held by a commit waiting for replication: off the workers.
                let ticking = server.clone();
                let _ = tokio::task::spawn_blocking(move || ticking.broker.coordinator().tick()).await;
                if swept.elapsed() >= sweep_every {
                    swept = tokio::time::Instant::now();
                    let server = server.clone();
                    // It walks every issued id: off the workers.
                    tokio::task::spawn_blocking(move || server.producers.expire());
                }
            }
        })
    };
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, say: wait a little rather than spin.
                        log::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    log::warn!(
                        "refusing {peer}: {} connections are open",
                        server.config.max_connections
                    );
                    continue;
                };
                let server = server.clone();
                let open = crate::telemetry::Connection::opened();
                connections.spawn(async move {
                    conn::serve(stream, peer, &server).await;
                    drop((slot, open));
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    ticker.abort();
    connections.shutdown().await;
    Ok(())
}
