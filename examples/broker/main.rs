//! The example broker: rivulet serving the Kafka protocol, for kcat, librdkafka, kafka-python
//! and Java clients.
//!
//! ```text
//! cargo run --release --features kafka --example broker -- --data ./data --listen 127.0.0.1:9092
//! kcat -b 127.0.0.1:9092 -L
//! ```
//!
//! Options: `--data DIR` (default `./data`), `--listen ADDR` (default `127.0.0.1:9092`:
//! loopback only; port 0 picks a free port, which the start line prints), `--advertised HOST:PORT` (what clients are told to connect to; default the
//! listen address), `--fsync always|never` (default `always`: every produce is on disk before
//! it is acknowledged), `--idle-ms N` (Kafka's `connections.max.idle.ms`: connections silent
//! this long are closed; default 600000, 10 minutes), `--num-partitions N` (Kafka's
//! `num.partitions`: how many partitions an auto-created topic gets; default 1) and
//! `--auto-create-topics true|false` (Kafka's `auto.create.topics.enable`: whether producing
//! to or asking metadata of an unknown topic creates it; default true) and `--acls
//! true|false` (whether ACLs are kept and applied, as by Kafka's authorizer with
//! `allow.everyone.if.no.acl.found=true`; default false, as a Kafka broker without an
//! authorizer) and `--group-initial-rebalance-delay-ms N` (Kafka's
//! `group.initial.rebalance.delay.ms`: how long a new group waits for more members before its
//! first rebalance; default 3000, Kafka's default; Kafka's shipped `server.properties` sets 0
//! for development). Ctrl-C or SIGTERM stops it and closes the log cleanly.
//!
//! `--metrics ADDR` serves the broker's metrics (`rivulet::telemetry`, and each group's
//! committed lag) for Prometheus to scrape, over HTTP at any path.
//!
//! `--config FILE` reads the settings from a Java properties file with Kafka's names, as a
//! Kafka broker reads `server.properties` (`log.dirs`, `listeners`, `num.partitions`, the
//! `log.*` defaults of new topics, ...; see `properties.rs` for the list); flags given beside
//! it override it.
//!
//! Built with the `cluster` feature, it is one node of a replicated cluster when given
//! `--node-id N --peer-listen ADDR --voters ID@ADDR,ID@ADDR,...` (the same voters on every
//! node; each node's own entry is its peer address). Topics it creates automatically, or with
//! replication factor -1, are held by min(3, nodes) nodes:
//!
//! ```text
//! cargo run --release --features kafka,cluster --example broker -- --data ./n1 \
//!     --listen 127.0.0.1:9092 --node-id 1 --peer-listen 127.0.0.1:19092 \
//!     --voters 1@127.0.0.1:19092,2@127.0.0.1:19093,3@127.0.0.1:19094
//! ```
//!
//! A node joins a running cluster with `--seeds ADDR,...` (peer addresses of some of its
//! nodes) in place of `--voters`, with a node id new to the cluster and its own
//! `--peer-listen` address; restarted, it needs neither seeds nor `--peer-listen`.

mod properties;
mod scrape;

use std::process::ExitCode;

use rivulet::kafka::ServerConfig;
use rivulet::{Broker, Fsync, TopicConfig};

struct Options {
    data: String,
    listen: String,
    advertised: Option<(String, u16)>,
    /// Given by `--fsync`: overrides the file's flush settings.
    fsync: Option<Fsync>,
    /// The defaults of new topics (from the config file's `log.*` settings).
    topic: TopicConfig,
    idle: Option<std::time::Duration>,
    num_partitions: u32,
    auto_create: bool,
    acls: bool,
    rebalance_delay: std::time::Duration,
    node_id: Option<u64>,
    peer_listen: Option<std::net::SocketAddr>,
    voters: Vec<(u64, std::net::SocketAddr)>,
    seeds: Vec<std::net::SocketAddr>,
    /// Where Prometheus scrapes the metrics.
    metrics: Option<std::net::SocketAddr>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let args: Vec<String> = args.collect();
    let mut o = Options {
        data: "./data".into(),
        listen: "127.0.0.1:9092".into(),
        advertised: None,
        fsync: None,
        topic: TopicConfig::default(),
        idle: None,
        num_partitions: 1,
        auto_create: true,
        acls: false,
        rebalance_delay: std::time::Duration::from_secs(3),
        node_id: None,
        peer_listen: None,
        voters: Vec::new(),
        seeds: Vec::new(),
        metrics: None,
    };
    // The file first, wherever `--config` stands: the flags override it.
    if let Some(at) = args.iter().position(|a| a == "--config") {
        let path = args.get(at + 1).ok_or("--config needs a value")?;
        let file = properties::read(path)
            .and_then(|props| properties::settings(&props))
            .map_err(|why| format!("--config {path}: {why}"))?;
        o.data = file.data.unwrap_or(o.data);
        o.listen = file.listen.unwrap_or(o.listen);
        o.advertised = file.advertised;
        o.topic = file.topic;
        o.idle = file.idle;
        o.num_partitions = file.num_partitions.unwrap_or(o.num_partitions);
        o.auto_create = file.auto_create.unwrap_or(o.auto_create);
        o.acls = file.acls.unwrap_or(o.acls);
        o.rebalance_delay = file.rebalance_delay.unwrap_or(o.rebalance_delay);
        o.node_id = file.node_id;
        o.peer_listen = file.peer_listen;
        o.voters = file.voters;
        o.seeds = file.seeds;
    }
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => drop(value()?),
            "--data" => o.data = value()?,
            "--listen" => o.listen = value()?,
            "--advertised" => {
                let v = value()?;
                let (host, port) = v.rsplit_once(':').ok_or("--advertised is HOST:PORT")?;
                let port = port.parse().map_err(|_| format!("bad port in {v}"))?;
                o.advertised = Some((host.to_string(), port));
            }
            "--fsync" => {
                o.fsync = Some(match value()?.as_str() {
                    "always" => Fsync::Always,
                    "never" => Fsync::Never,
                    other => return Err(format!("--fsync is always or never, not {other}")),
                })
            }
            "--idle-ms" => {
                let v = value()?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("--idle-ms is milliseconds, not {v}"))?;
                o.idle = Some(std::time::Duration::from_millis(ms));
            }
            "--num-partitions" => {
                let v = value()?;
                o.num_partitions = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--num-partitions is a count of at least 1, not {v}"))?;
            }
            "--auto-create-topics" => o.auto_create = boolean(&flag, &value()?)?,
            "--acls" => o.acls = boolean(&flag, &value()?)?,
            "--group-initial-rebalance-delay-ms" => {
                let v = value()?;
                let ms = v
                    .parse()
                    .map_err(|_| format!("{flag} is milliseconds, not {v}"))?;
                o.rebalance_delay = std::time::Duration::from_millis(ms);
            }
            "--node-id" => {
                let v = value()?;
                o.node_id = Some(v.parse().map_err(|_| format!("--node-id is a number, not {v}"))?);
            }
            "--peer-listen" => {
                let v = value()?;
                o.peer_listen = Some(
                    v.parse()
                        .map_err(|_| format!("--peer-listen is IP:PORT, not {v}"))?,
                );
            }
            "--voters" => {
                o.voters.clear();
                for voter in value()?.split(',') {
                    let bad = || format!("--voters is ID@IP:PORT,..., not {voter}");
                    let (id, addr) = voter.split_once('@').ok_or_else(bad)?;
                    o.voters
                        .push((id.parse().map_err(|_| bad())?, addr.parse().map_err(|_| bad())?));
                }
            }
            "--seeds" => {
                o.seeds.clear();
                for seed in value()?.split(',') {
                    let addr = seed
                        .parse()
                        .map_err(|_| format!("--seeds is IP:PORT,..., not {seed}"))?;
                    o.seeds.push(addr);
                }
            }
            "--metrics" => {
                let v = value()?;
                o.metrics = Some(v.parse().map_err(|_| format!("--metrics is IP:PORT, not {v}"))?);
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// The broker alone, or as one node of a cluster.
enum Node {
    Alone(Broker),
    #[cfg(feature = "cluster")]
    Clustered(rivulet::cluster::Cluster),
}

impl Node {
    fn broker(&self) -> Broker {
        match self {
            Node::Alone(b) => b.clone(),
            #[cfg(feature = "cluster")]
            Node::Clustered(c) => c.broker().clone(),
        }
    }

    fn close(&self) -> rivulet::Result<()> {
        match self {
            Node::Alone(b) => b.close(),
            #[cfg(feature = "cluster")]
            Node::Clustered(c) => c.shutdown(),
        }
    }
}

/// Opens the broker, starting it as a cluster's node if the options say so.
async fn open(o: &Options, builder: rivulet::BrokerBuilder, kafka: &str) -> Result<Node, String> {
    if o.node_id.is_none() && o.voters.is_empty() && o.seeds.is_empty() {
        return builder.open().map(Node::Alone).map_err(|e| e.to_string());
    }
    #[cfg(feature = "cluster")]
    {
        let id = o.node_id.ok_or("--voters and --seeds need --node-id")?;
        let mut cluster = rivulet::cluster::ClusterBuilder::new(id, &o.data)
            .voters(o.voters.iter().copied())
            .seeds(o.seeds.iter().copied())
            .kafka_address(
                o.advertised
                    .as_ref()
                    .map_or(kafka.to_string(), |(h, p)| format!("{h}:{p}")),
            )
            .broker(|_| builder);
        if let Some(addr) = o.peer_listen {
            cluster = cluster.peer_listen(addr);
        }
        // Starting blocks on the cluster's own runtime.
        let node = tokio::task::spawn_blocking(move || cluster.start())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        log::info!("node {id} of a cluster started");
        Ok(Node::Clustered(node))
    }
    #[cfg(not(feature = "cluster"))]
    {
        let _ = kafka;
        Err("--node-id, --voters and --seeds need a build with the cluster feature".into())
    }
}

fn boolean(flag: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{flag} is true or false, not {other}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let o = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("{why}");
            }
            eprintln!(
                "usage: broker [--config FILE] [--metrics ADDR] [--data DIR] [--listen ADDR] [--advertised HOST:PORT] [--fsync always|never] \
                 [--idle-ms N] [--num-partitions N] [--auto-create-topics true|false] [--acls true|false] \
                 [--group-initial-rebalance-delay-ms N] [--node-id N --peer-listen ADDR (--voters ID@ADDR,... | --seeds ADDR,...)]"
            );
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&o.listen).await {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot listen on {}: {e}", o.listen);
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().map_or(o.listen.clone(), |a| a.to_string());
    // The recorder first: the logs register their counters with it as they open.
    let scrapes = match o.metrics {
        None => None,
        Some(addr) => match (scrape::install(), scrape::bind(addr).await) {
            (Ok(handle), Ok(listener)) => Some((handle, listener)),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // Kafka's group.initial.rebalance.delay.ms: clients started together share one rebalance.
    let mut builder = Broker::builder(&o.data).default_topic_config(o.topic.clone());
    if let Some(fsync) = o.fsync {
        builder = builder.fsync(fsync);
    }
    let builder = builder
        .num_partitions(o.num_partitions)
        .auto_create_topics(o.auto_create)
        .group_initial_rebalance_delay(o.rebalance_delay);
    let node = match open(&o, builder, &bound).await {
        Ok(node) => node,
        Err(e) => {
            log::error!("cannot open {}: {e}", o.data);
            return ExitCode::FAILURE;
        }
    };
    let broker = node.broker();
    if let Some((handle, listener)) = scrapes {
        log::info!(
            "metrics for Prometheus on {}",
            listener.local_addr().map_or(String::new(), |a| a.to_string())
        );
        tokio::spawn(scrape::serve(listener, handle, broker.clone()));
    }
    let mut config = ServerConfig::default().acls(o.acls);
    if let Some((host, port)) = o.advertised {
        config = config.advertised(host, port);
    }
    if let Some(idle) = o.idle {
        config = config.connections_max_idle(idle);
    }
    log::info!("rivulet serving Kafka on {bound} from {}", o.data);
    // Ctrl-C, or SIGTERM (what systemd, Docker and Kubernetes send): a clean close either way.
    let stop = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    tokio::signal::ctrl_c().await.ok();
                }
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.ok();
        log::info!("stopping");
    };
    if let Err(e) = rivulet::kafka::serve_with(listener, broker.clone(), config, stop).await {
        log::error!("serving stopped: {e}");
    }
    match node.close() {
        Ok(()) => {
            log::info!("stopped; the log is closed cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("closing the log: {e}");
            ExitCode::FAILURE
        }
    }
}
