//! `--config FILE`: the broker's settings from a Java properties file with Kafka's property
//! names, as a Kafka broker reads `server.properties`.
//!
//! The names taken, and what they set:
//!
//! | property | sets |
//! |----------|------|
//! | `log.dirs` (or `log.dir`) | the data directory (one) |
//! | `listeners` | `PLAINTEXT://HOST:PORT`: the Kafka listener; `CONTROLLER://IP:PORT`: the peer listener of a cluster's node |
//! | `advertised.listeners` | `PLAINTEXT://HOST:PORT`: the address clients are told |
//! | `node.id` (or `broker.id`) | the node's id in a cluster |
//! | `controller.quorum.voters` | `ID@IP:PORT,...`: a cluster's voters, at their peer addresses |
//! | `controller.quorum.bootstrap.servers` | `IP:PORT,...`: peers of a running cluster to join |
//! | `num.partitions`, `auto.create.topics.enable`, `group.initial.rebalance.delay.ms`, `connections.max.idle.ms` | as the flags of the same names |
//! | `authorizer.class.name` | any class name turns ACLs on (as Kafka's authorizer with `allow.everyone.if.no.acl.found=true`) |
//! | `default.replication.factor` | the replication factor of topics created without one |
//! | `log.retention.{ms,minutes,hours}`, `log.retention.bytes`, `log.segment.bytes`, `log.roll.{ms,hours}`, `log.index.size.max.bytes`, `log.index.interval.bytes`, `message.max.bytes`, `log.message.timestamp.type`, `log.flush.interval.messages`, `log.flush.interval.ms`, `compression.type`, `log.cleanup.policy`, `log.cleaner.delete.retention.ms`, `log.cleaner.min.cleanable.ratio`, `log.retention.check.interval.ms` | the defaults of new topics, under their topic-level names |
//!
//! Settings of Kafka's that have no counterpart here (thread counts, socket buffers, ZooKeeper)
//! are logged and ignored, as a Kafka broker logs a setting it does not know. A bad value of a
//! setting taken is an error, and the broker does not start.

use std::collections::BTreeMap;
use std::time::Duration;

use rivulet::TopicConfig;

/// The settings of a properties file, by name, with the line each came from (the last one
/// given wins, as in Java).
pub type Properties = BTreeMap<String, (String, usize)>;

/// Reads a Java properties file: `name=value`, `name: value` or `name value` lines, `#` and
/// `!` comments, lines continued by a trailing backslash, and Java's escapes.
pub fn read(path: &str) -> Result<Properties, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse(&text).map_err(|(line, why)| format!("{path}:{line}: {why}"))
}

/// [`read`] of a file's text; an error names its line.
pub fn parse(text: &str) -> Result<Properties, (usize, String)> {
    let mut out = Properties::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let start = index + 1;
        let mut logical = line.trim_start().to_string();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        // A line ending in an odd number of backslashes goes on with the next one.
        while continued(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split(&logical);
        let key = unescape(key).map_err(|why| (start, why))?;
        let value = unescape(value).map_err(|why| (start, why))?;
        out.insert(key, (value, start));
    }
    Ok(out)
}

fn continued(line: &str) -> bool {
    line.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// The key (up to the first unescaped `=`, `:` or blank) and the value after the separator.
fn split(line: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || c.is_whitespace() {
            let rest = line[i..].trim_start();
            let rest = match rest.strip_prefix(['=', ':']) {
                Some(after) if c.is_whitespace() => after.trim_start(),
                _ if c.is_whitespace() => rest,
                _ => rest[1..].trim_start(),
            };
            return (&line[..i], rest);
        }
    }
    (line, "")
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 4)
                    .and_then(char::from_u32)
                    .ok_or(format!("bad escape \\u{hex}"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// Broker-level names of topic settings, with the topic-level name each sets.
const TOPIC_DEFAULTS: &[(&str, &str)] = &[
    ("log.retention.bytes", "retention.bytes"),
    ("log.segment.bytes", "segment.bytes"),
    ("log.index.size.max.bytes", "segment.index.bytes"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("message.max.bytes", "max.message.bytes"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("compression.type", "compression.type"),
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    ("log.cleaner.min.cleanable.ratio", "min.cleanable.dirty.ratio"),
];

/// Settings of Kafka's broker that are read here only to be named in the log: they tune
/// parts the embedded engine does not have.
const WITHOUT_EFFECT: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.replica.fetchers",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "socket.request.max.bytes",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "process.roles",
    "controller.listener.names",
    "inter.broker.listener.name",
    "listener.security.protocol.map",
    "zookeeper.connect",
    "zookeeper.connection.timeout.ms",
];

/// What a properties file sets, in the broker's terms. `None`s are settings it leaves alone.
#[derive(Debug, Default)]
pub struct Settings {
    pub data: Option<String>,
    pub listen: Option<String>,
    pub peer_listen: Option<std::net::SocketAddr>,
    pub advertised: Option<(String, u16)>,
    pub node_id: Option<u64>,
    pub voters: Vec<(u64, std::net::SocketAddr)>,
    pub seeds: Vec<std::net::SocketAddr>,
    pub num_partitions: Option<u32>,
    pub auto_create: Option<bool>,
    pub acls: Option<bool>,
    pub rebalance_delay: Option<Duration>,
    pub idle: Option<Duration>,
    /// The defaults of new topics (from [`TopicConfig::default`]).
    pub topic: TopicConfig,
    /// Whether any topic default was set (so `--fsync` knows what it overrides).
    pub topic_set: bool,
}

/// The broker's settings from `props`; the first bad value is an error naming its line.
pub fn settings(props: &Properties) -> Result<Settings, String> {
    let mut s = Settings::default();
    let get = |name: &str| props.get(name).map(|(v, _)| v.trim());
    let at = |name: &str| props.get(name).map_or(0, |(_, line)| *line);
    let bad = |name: &str, why: String| format!("line {}: {name}: {why}", at(name));
    for (name, (_, line)) in props {
        let name = name.as_str();
        if WITHOUT_EFFECT.contains(&name) {
            log::info!("{name} (line {line}) has no counterpart in rivulet; ignored");
        } else if !KNOWN.contains(&name) && !TOPIC_DEFAULTS.iter().any(|(n, _)| *n == name) {
            log::warn!("{name} (line {line}) is not a setting rivulet knows; ignored");
        }
    }
    let dirs = ["log.dirs", "log.dir"]
        .into_iter()
        .find_map(|name| Some((name, get(name)?)));
    s.data = match dirs {
        Some((name, dirs)) if dirs.contains(',') => {
            return Err(bad(name, format!("one data directory, not {dirs}")));
        }
        Some((_, dir)) => Some(dir.to_string()),
        None => None,
    };
    if let Some(listeners) = get("listeners") {
        for listener in listeners.split(',').map(str::trim) {
            let (scheme, address) = listener
                .split_once("://")
                .ok_or_else(|| bad("listeners", format!("{listener} is not NAME://HOST:PORT")))?;
            // Kafka binds a listener without a host to every interface.
            let address = match address.strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => address.to_string(),
            };
            match scheme {
                "PLAINTEXT" => s.listen = Some(address),
                "CONTROLLER" => {
                    use std::net::ToSocketAddrs;
                    let resolved = address.to_socket_addrs().ok().and_then(|mut a| a.next());
                    s.peer_listen = Some(resolved.ok_or_else(|| {
                        bad("listeners", format!("CONTROLLER://HOST:PORT, not {listener}"))
                    })?);
                }
                other => {
                    return Err(bad(
                        "listeners",
                        format!("{other} is not served (PLAINTEXT and CONTROLLER are)"),
                    ));
                }
            }
        }
    }
    if let Some(v) = get("advertised.listeners") {
        // The Kafka listener's entry; a CONTROLLER one is for the peers, not clients.
        let address = v
            .split(',')
            .find_map(|l| l.trim().strip_prefix("PLAINTEXT://"))
            .ok_or_else(|| bad("advertised.listeners", format!("PLAINTEXT://HOST:PORT, not {v}")))?;
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            .ok_or_else(|| bad("advertised.listeners", format!("PLAINTEXT://HOST:PORT, not {v}")))?;
        s.advertised = Some((host, port));
    }
    for name in ["node.id", "broker.id"] {
        if let Some(v) = get(name) {
            let id = v.parse().map_err(|_| bad(name, format!("a node id, not {v}")))?;
            if s.node_id.is_some_and(|other| other != id) {
                return Err(bad(name, "node.id and broker.id differ".into()));
            }
            s.node_id = Some(id);
        }
    }
    if let Some(v) = get("controller.quorum.voters").filter(|v| !v.is_empty()) {
        for voter in v.split(',').map(str::trim) {
            let parsed = voter
                .split_once('@')
                .and_then(|(id, addr)| Some((id.parse().ok()?, addr.parse().ok()?)));
            s.voters
                .push(parsed.ok_or_else(|| {
                    bad("controller.quorum.voters", format!("ID@IP:PORT,..., not {voter}"))
                })?);
        }
    }
    if let Some(v) = get("controller.quorum.bootstrap.servers").filter(|v| !v.is_empty()) {
        for seed in v.split(',').map(str::trim) {
            s.seeds.push(seed.parse().map_err(|_| {
                bad(
                    "controller.quorum.bootstrap.servers",
                    format!("IP:PORT,..., not {seed}"),
                )
            })?);
        }
    }
    if let Some(v) = get("num.partitions") {
        s.num_partitions = Some(
            v.parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad("num.partitions", format!("a count of at least 1, not {v}")))?,
        );
    }
    let boolean = |name: &str, v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(bad(name, format!("true or false, not {other}"))),
    };
    if let Some(v) = get("auto.create.topics.enable") {
        s.auto_create = Some(boolean("auto.create.topics.enable", v)?);
    }
    if let Some(v) = get("authorizer.class.name") {
        s.acls = Some(!v.is_empty());
    }
    if let Some(v) = get("allow.everyone.if.no.acl.found")
        && !boolean("allow.everyone.if.no.acl.found", v)?
    {
        return Err(bad(
            "allow.everyone.if.no.acl.found",
            "only true is served: a resource without ACLs is open to everyone".into(),
        ));
    }
    let millis = |name: &str, v: &str| {
        v.parse()
            .map(Duration::from_millis)
            .map_err(|_| bad(name, format!("milliseconds, not {v}")))
    };
    if let Some(v) = get("group.initial.rebalance.delay.ms") {
        s.rebalance_delay = Some(millis("group.initial.rebalance.delay.ms", v)?);
    }
    if let Some(v) = get("connections.max.idle.ms") {
        s.idle = Some(millis("connections.max.idle.ms", v)?);
    }
    let set = |s: &mut Settings, from: &str, to: &str, value: &str| {
        s.topic.set(to, value).map_err(|e| bad(from, e.to_string()))?;
        s.topic_set = true;
        Ok::<(), String>(())
    };
    for (from, to) in TOPIC_DEFAULTS {
        if let Some(v) = get(from) {
            set(&mut s, from, to, v)?;
        }
    }
    // Kafka's order of precedence: milliseconds, then minutes, then hours.
    let in_ms = |name: &str, per: i64| -> Result<Option<String>, String> {
        get(name)
            .map(|v| {
                let n: i64 = v
                    .parse()
                    .map_err(|_| bad(name, format!("a whole number, not {v}")))?;
                Ok(if n < 0 {
                    "-1".to_string()
                } else {
                    n.saturating_mul(per).to_string()
                })
            })
            .transpose()
    };
    let retention = match in_ms("log.retention.ms", 1)? {
        Some(ms) => Some(("log.retention.ms", ms)),
        None => match in_ms("log.retention.minutes", 60_000)? {
            Some(ms) => Some(("log.retention.minutes", ms)),
            None => in_ms("log.retention.hours", 3_600_000)?.map(|ms| ("log.retention.hours", ms)),
        },
    };
    if let Some((from, ms)) = retention {
        set(&mut s, from, "retention.ms", &ms)?;
    }
    let roll = match in_ms("log.roll.ms", 1)? {
        Some(ms) => Some(("log.roll.ms", ms)),
        None => in_ms("log.roll.hours", 3_600_000)?.map(|ms| ("log.roll.hours", ms)),
    };
    if let Some((from, ms)) = roll {
        set(&mut s, from, "segment.ms", &ms)?;
    }
    if let Some(v) = get("log.retention.check.interval.ms") {
        let every = millis("log.retention.check.interval.ms", v)?;
        let log = s.topic.log().clone().retention_check_interval(every);
        s.topic = s.topic.clone().with_log(log);
        s.topic_set = true;
    }
    if let Some(v) = get("default.replication.factor") {
        let n: u16 = v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            bad(
                "default.replication.factor",
                format!("a count of at least 1, not {v}"),
            )
        })?;
        s.topic = s.topic.clone().replication_factor(n);
        s.topic_set = true;
    }
    Ok(s)
}

/// Settings taken besides the topic defaults.
const KNOWN: &[&str] = &[
    "log.dirs",
    "log.dir",
    "listeners",
    "advertised.listeners",
    "node.id",
    "broker.id",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "num.partitions",
    "auto.create.topics.enable",
    "authorizer.class.name",
    "allow.everyone.if.no.acl.found",
    "group.initial.rebalance.delay.ms",
    "connections.max.idle.ms",
    "default.replication.factor",
    "log.retention.ms",
    "log.retention.minutes",
    "log.retention.hours",
    "log.retention.check.interval.ms",
    "log.roll.ms",
    "log.roll.hours",
];
