//! `rivulet`: topics, records, groups and segment files of a data directory (read-only while
//! another process writes it) or of any Kafka broker (`--bootstrap`), in the shape of Kafka's
//! scripts and kcat.

mod local;
mod remote;
mod segments;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rivulet::OwnedRecord;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(
    name = "rivulet",
    version,
    about = "Topics, records and groups of a rivulet data directory or a Kafka broker"
)]
struct Cli {
    /// A rivulet data directory (read-only while another process has it open).
    #[arg(long, global = true, conflicts_with = "bootstrap")]
    dir: Option<PathBuf>,
    /// A Kafka broker to reach through the Kafka protocol (host:port[,host:port...]).
    #[arg(long, short = 'b', global = true)]
    bootstrap: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, describe, create, delete topics and alter their configs.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Send lines of standard input as records.
    Produce(Produce),
    /// Print records.
    Consume(Consume),
    /// List and describe consumer groups (with lag), reset their offsets, delete them.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Print the batches (and records) of segment files, as kafka-dump-log does.
    DumpLog(DumpLog),
    /// Check every segment of a data directory: frames, CRCs, offsets, records, indexes.
    Check,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// The topics' names.
    List,
    /// Partitions (first and end offsets) and configs of the named topics, or all.
    Describe { topics: Vec<String> },
    /// Create a topic.
    Create {
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// A config by its Kafka name (`retention.ms=60000`); repeatable.
        #[arg(long = "config", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// Delete a topic and its records.
    Delete { topic: String },
    /// Change configs of a topic (others keep their values).
    Alter {
        topic: String,
        #[arg(long = "config", value_parser = key_value, required = true)]
        configs: Vec<(String, String)>,
    },
}

#[derive(Args)]
struct Produce {
    topic: String,
    /// The partition (default: by the key's hash, or the partitioner's choice for keyless records).
    #[arg(long, short)]
    partition: Option<u32>,
    /// Split each line at the first SEP into key and value (kcat's -K).
    #[arg(long, short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// A header for every record (`key=value`); repeatable.
    #[arg(long = "header", short = 'H', value_parser = key_value)]
    headers: Vec<(String, String)>,
}

#[derive(Args)]
struct Consume {
    topic: String,
    /// Only this partition (repeatable; default: all).
    #[arg(long = "partition", short)]
    partitions: Vec<u32>,
    /// Where to start: `earliest`, `latest`, or an offset.
    #[arg(long, short = 'o', default_value = "earliest", conflicts_with = "from_time")]
    offset: String,
    /// Start at the first record at or after this time (milliseconds since the Unix epoch).
    #[arg(long)]
    from_time: Option<i64>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'c')]
    count: Option<u64>,
    /// What to print per record, with kcat's tokens: %t topic, %p partition, %o offset,
    /// %T timestamp, %k key, %s value, %h headers (k=v,...), %K and %S key and value
    /// lengths (-1: null), \n, \t, %%.
    #[arg(long, short = 'F', default_value = "%s\\n")]
    format: String,
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// The groups with committed offsets.
    List,
    /// A group's committed offsets, log end offsets and lag.
    Describe { group: String },
    /// Set a group's committed offsets on a topic (only printed unless --execute).
    Reset(Reset),
    /// Delete a group and its committed offsets.
    Delete { group: String },
}

#[derive(Args)]
struct Reset {
    group: String,
    #[arg(long)]
    topic: String,
    /// Only this partition (repeatable; default: all).
    #[arg(long = "partition")]
    partitions: Vec<u32>,
    #[arg(long, group = "to")]
    to_earliest: bool,
    #[arg(long, group = "to")]
    to_latest: bool,
    #[arg(long, group = "to")]
    to_offset: Option<i64>,
    /// The first record at or after this time (milliseconds since the Unix epoch).
    #[arg(long, group = "to")]
    to_time: Option<i64>,
    /// Commit the new offsets (without it the plan is only printed, as Kafka's tool does).
    #[arg(long)]
    execute: bool,
}

#[derive(Args)]
struct DumpLog {
    /// Segment files (`<offset>.log`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print each record too.
    #[arg(long)]
    print_data: bool,
}

fn key_value(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// Where a consume or a reset starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Time(i64),
}

/// What `consume` asks of a backend.
pub struct ConsumeSpec<'a> {
    pub topic: &'a str,
    pub partitions: &'a [u32],
    pub start: Start,
    pub follow: bool,
}

/// One partition of a topic as `topics describe` prints it.
pub struct PartitionRow {
    pub partition: u32,
    pub start: i64,
    pub end: i64,
    /// Anything else the backend knows (leader and replicas, size on disk).
    pub more: String,
}

/// One partition of a group as `groups describe` prints it.
pub struct GroupRow {
    pub topic: String,
    pub partition: u32,
    pub committed: i64,
    pub end: i64,
}

/// A topic's partitions and its configs by Kafka's names.
pub type Described = (Vec<PartitionRow>, Vec<(String, String)>);

/// A line of standard input to send: its key, if split off, and its value.
pub type Line = (Option<Vec<u8>>, Vec<u8>);

/// What the commands need from a data directory or a Kafka broker.
pub trait Backend {
    fn list_topics(&self) -> Result<Vec<String>>;
    fn describe_topic(&self, topic: &str) -> Result<Described>;
    fn create_topic(&self, topic: &str, partitions: u32, configs: &[(String, String)]) -> Result<()>;
    fn delete_topic(&self, topic: &str) -> Result<()>;
    fn alter_topic(&self, topic: &str, configs: &[(String, String)]) -> Result<()>;
    /// Sends `records` (key, value) with `headers`; returns how many were acknowledged.
    fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        headers: &[(String, String)],
        records: &mut dyn Iterator<Item = Result<Line>>,
    ) -> Result<u64>;
    /// Hands records to `each` until it says stop, or (not following) every partition is
    /// read to its end as it was at the start.
    fn consume(
        &self,
        spec: &ConsumeSpec<'_>,
        each: &mut dyn FnMut(&OwnedRecord) -> Result<bool>,
    ) -> Result<()>;
    fn partitions(&self, topic: &str) -> Result<u32>;
    /// The partitions asked for, or (none asked for) all of the topic's.
    fn chosen(&self, topic: &str, asked: &[u32]) -> Result<Vec<u32>> {
        match asked.is_empty() {
            true => Ok((0..self.partitions(topic)?).collect()),
            false => Ok(asked.to_vec()),
        }
    }
    /// The offset `start` means for each of `partitions`.
    fn resolve(&self, topic: &str, partitions: &[u32], start: Start) -> Result<Vec<(u32, i64)>>;
    fn list_groups(&self) -> Result<Vec<String>>;
    fn describe_group(&self, group: &str) -> Result<Vec<GroupRow>>;
    fn reset_group(&self, group: &str, topic: &str, offsets: &[(u32, i64)]) -> Result<()>;
    fn delete_group(&self, group: &str) -> Result<()>;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rivulet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backend(cli: &Cli) -> Result<Box<dyn Backend>> {
    match (&cli.dir, &cli.bootstrap) {
        (Some(dir), None) => Ok(Box::new(local::Local::new(dir.clone()))),
        (None, Some(servers)) => Ok(Box::new(remote::Remote::new(servers)?)),
        _ => Err(
            "say where: --dir DIR (a rivulet data directory) or --bootstrap HOST:PORT (a Kafka broker)"
                .into(),
        ),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match &cli.command {
        Command::DumpLog(d) => {
            let damaged = segments::dump(&d.files, d.print_data, &mut out)?;
            out.flush()?;
            return Ok(if damaged == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Check => {
            let dir = cli
                .dir
                .as_ref()
                .ok_or("check reads a data directory: --dir DIR")?;
            let problems = segments::check(dir, &mut out)?;
            out.flush()?;
            return Ok(if problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        _ => {}
    }
    let backend = backend(&cli)?;
    match cli.command {
        Command::Topics(TopicsCommand::List) => {
            for topic in backend.list_topics()? {
                writeln!(out, "{topic}")?;
            }
        }
        Command::Topics(TopicsCommand::Describe { topics }) => {
            let topics = if topics.is_empty() {
                backend.list_topics()?
            } else {
                topics
            };
            for topic in topics {
                let (partitions, configs) = backend.describe_topic(&topic)?;
                let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(
                    out,
                    "Topic: {topic}\tPartitions: {}\tConfigs: {}",
                    partitions.len(),
                    configs.join(",")
                )?;
                for p in partitions {
                    writeln!(
                        out,
                        "\tPartition: {}\tStart: {}\tEnd: {}\tRecords: {}{}",
                        p.partition,
                        p.start,
                        p.end,
                        p.end - p.start,
                        p.more
                    )?;
                }
            }
        }
        Command::Topics(TopicsCommand::Create {
            topic,
            partitions,
            configs,
        }) => {
            backend.create_topic(&topic, partitions, &configs)?;
            writeln!(out, "Created topic {topic}.")?;
        }
        Command::Topics(TopicsCommand::Delete { topic }) => {
            backend.delete_topic(&topic)?;
            writeln!(out, "Deleted topic {topic}.")?;
        }
        Command::Topics(TopicsCommand::Alter { topic, configs }) => {
            backend.alter_topic(&topic, &configs)?;
            writeln!(out, "Altered topic {topic}.")?;
        }
        Command::Produce(p) => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let separator = p.key_separator.clone();
            // Lines of any bytes (a value need not be text), without their line ending.
            let mut records = std::iter::from_fn(|| {
                let mut line = Vec::new();
                match input.read_until(b'\n', &mut line) {
                    Ok(0) => None,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        let split = separator.as_ref().and_then(|sep| {
                            let sep = sep.as_bytes();
                            let at = line.windows(sep.len()).position(|w| w == sep)?;
                            Some((line[..at].to_vec(), line[at + sep.len()..].to_vec()))
                        });
                        Some(Ok(match split {
                            Some((k, v)) => (Some(k), v),
                            None => (None, line),
                        }))
                    }
                    Err(e) => Some(Err(e.into())),
                }
            });
            let n = backend.produce(&p.topic, p.partition, &p.headers, &mut records)?;
            eprintln!("produced {n} records to {}", p.topic);
        }
        Command::Consume(c) => {
            let start = match (c.from_time, c.offset.as_str()) {
                (Some(ms), _) => Start::Time(ms),
                (None, "earliest" | "beginning") => Start::Earliest,
                (None, "latest" | "end") => Start::Latest,
                (None, n) => Start::Offset(
                    n.parse()
                        .map_err(|_| format!("--offset {n:?}: earliest, latest or an offset"))?,
                ),
            };
            let spec = ConsumeSpec {
                topic: &c.topic,
                partitions: &c.partitions,
                start,
                follow: c.follow,
            };
            let format = parse_format(&c.format)?;
            let mut n = 0;
            if c.count == Some(0) {
                return Ok(ExitCode::SUCCESS);
            }
            backend.consume(&spec, &mut |r| {
                print_record(&mut out, &format, r)?;
                n += 1;
                if c.follow {
                    out.flush()?;
                }
                Ok(c.count.is_none_or(|max| n < max))
            })?;
        }
        Command::Groups(GroupsCommand::List) => {
            for group in backend.list_groups()? {
                writeln!(out, "{group}")?;
            }
        }
        Command::Groups(GroupsCommand::Describe { group }) => {
            let rows = backend.describe_group(&group)?;
            if rows.is_empty() {
                return Err(format!("group {group:?} has no committed offsets").into());
            }
            writeln!(
                out,
                "GROUP\tTOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG"
            )?;
            for r in rows {
                let lag = (r.end - r.committed).max(0);
                writeln!(
                    out,
                    "{group}\t{}\t{}\t{}\t{}\t{lag}",
                    r.topic, r.partition, r.committed, r.end
                )?;
            }
        }
        Command::Groups(GroupsCommand::Reset(r)) => {
            let to = match (r.to_earliest, r.to_latest, r.to_offset, r.to_time) {
                (true, ..) => Start::Earliest,
                (_, true, ..) => Start::Latest,
                (_, _, Some(offset), _) => Start::Offset(offset),
                (_, _, _, Some(ms)) => Start::Time(ms),
                _ => {
                    return Err(
                        "say where to: --to-earliest, --to-latest, --to-offset N or --to-time MS".into(),
                    );
                }
            };
            let partitions = backend.chosen(&r.topic, &r.partitions)?;
            let offsets = backend.resolve(&r.topic, &partitions, to)?;
            writeln!(out, "GROUP\tTOPIC\tPARTITION\tNEW-OFFSET")?;
            for (p, offset) in &offsets {
                writeln!(out, "{}\t{}\t{p}\t{offset}", r.group, r.topic)?;
            }
            if r.execute {
                backend.reset_group(&r.group, &r.topic, &offsets)?;
            } else {
                writeln!(out, "(not committed: add --execute)")?;
            }
        }
        Command::Groups(GroupsCommand::Delete { group }) => {
            backend.delete_group(&group)?;
            writeln!(out, "Deleted group {group}.")?;
        }
        Command::DumpLog(_) | Command::Check => unreachable!("handled above"),
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A piece of a `--format`.
enum Token {
    Text(String),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
    KeyLen,
    ValueLen,
}

fn parse_format(format: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let token = match (c, chars.clone().next()) {
            ('%', Some(t)) => match t {
                't' => Token::Topic,
                'p' => Token::Partition,
                'o' => Token::Offset,
                'T' => Token::Timestamp,
                'k' => Token::Key,
                's' => Token::Value,
                'h' => Token::Headers,
                'K' => Token::KeyLen,
                'S' => Token::ValueLen,
                '%' => Token::Text("%".into()),
                other => return Err(format!("--format: unknown token %{other}").into()),
            },
            ('\\', Some('n')) => Token::Text("\n".into()),
            ('\\', Some('t')) => Token::Text("\t".into()),
            _ => {
                text.push(c);
                continue;
            }
        };
        chars.next();
        if !text.is_empty() {
            tokens.push(Token::Text(std::mem::take(&mut text)));
        }
        tokens.push(token);
    }
    if !text.is_empty() {
        tokens.push(Token::Text(text));
    }
    Ok(tokens)
}

fn print_record(out: &mut impl Write, format: &[Token], r: &OwnedRecord) -> Result<()> {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(-1, |b| b.len() as i64);
    for token in format {
        match token {
            Token::Text(t) => out.write_all(t.as_bytes())?,
            Token::Topic => out.write_all(r.topic.as_bytes())?,
            Token::Partition => write!(out, "{}", r.partition)?,
            Token::Offset => write!(out, "{}", r.offset)?,
            Token::Timestamp => write!(out, "{}", r.timestamp)?,
            Token::Key => out.write_all(r.key.as_deref().unwrap_or_default())?,
            Token::Value => out.write_all(r.value.as_deref().unwrap_or_default())?,
            Token::KeyLen => write!(out, "{}", len(&r.key))?,
            Token::ValueLen => write!(out, "{}", len(&r.value))?,
            Token::Headers => {
                for (i, h) in r.headers().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(h.key)?;
                    out.write_all(b"=")?;
                    out.write_all(h.value.unwrap_or_default())?;
                }
            }
        }
    }
    Ok(())
}
