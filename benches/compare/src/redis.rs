//! Redis Streams: `redis-server` started with the durability asked for, and a small RESP
//! client over one connection: pipelined XADD, XRANGE replay, and single XADDs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use crate::server::Server;

/// How Redis keeps the stream: in memory only, or in its append-only file fsynced every
/// second or before each reply.
#[derive(Clone, Copy, Debug)]
pub enum Durability {
    Memory,
    EverySec,
    Always,
}

pub fn start(root: &Path, durability: Durability) -> Server {
    Server::start("redis-server", root, |port, dir| {
        let (aof, fsync) = match durability {
            Durability::Memory => ("no", "no"),
            Durability::EverySec => ("yes", "everysec"),
            Durability::Always => ("yes", "always"),
        };
        [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            aof,
            "--appendfsync",
            fsync,
            "--dir",
            &dir.display().to_string(),
            "--protected-mode",
            "no",
        ]
        .map(String::from)
        .to_vec()
    })
}

pub struct Conn {
    out: TcpStream,
    input: BufReader<TcpStream>,
    line: Vec<u8>,
    bulk: Vec<u8>,
}

/// `XADD key * v <value>` in RESP.
fn xadd(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    write!(
        buf,
        "*5\r\n$4\r\nXADD\r\n${}\r\n{key}\r\n$1\r\n*\r\n$1\r\nv\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .unwrap();
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

fn command(buf: &mut Vec<u8>, args: &[&str]) {
    write!(buf, "*{}\r\n", args.len()).unwrap();
    for a in args {
        write!(buf, "${}\r\n{a}\r\n", a.len()).unwrap();
    }
}

impl Conn {
    pub fn new(server: &Server) -> Conn {
        let out = server.connect();
        let input = BufReader::with_capacity(1 << 20, out.try_clone().expect("clone the socket"));
        Conn {
            out,
            input,
            line: Vec::new(),
            bulk: Vec::new(),
        }
    }

    fn line(&mut self) -> &[u8] {
        self.line.clear();
        self.input
            .read_until(b'\n', &mut self.line)
            .expect("read from redis");
        assert!(self.line.ends_with(b"\r\n"), "redis closed the connection");
        &self.line[..self.line.len() - 2]
    }

    fn int(bytes: &[u8]) -> i64 {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a RESP integer")
    }

    /// Reads one reply whole; keeps the last bulk string it held that looks like a stream id
    /// (for XRANGE, the last entry's id) and returns the number of top-level array elements.
    fn reply(&mut self, last_id: &mut Vec<u8>) -> usize {
        let (kind, n) = {
            let line = self.line();
            match line.first() {
                Some(b'-') => panic!("redis: {}", String::from_utf8_lossy(line)),
                Some(&k @ (b'$' | b'*')) => (k, Self::int(&line[1..])),
                Some(b'+' | b':') => return 0,
                _ => panic!("unexpected RESP reply {:?}", String::from_utf8_lossy(line)),
            }
        };
        if n < 0 {
            return 0;
        }
        let n = n as usize;
        if kind == b'*' {
            for _ in 0..n {
                self.reply(last_id);
            }
            return n;
        }
        self.bulk.resize(n + 2, 0);
        self.input.read_exact(&mut self.bulk).expect("read a bulk string");
        let s = &self.bulk[..n];
        if s.contains(&b'-') && s.iter().all(|b| b.is_ascii_digit() || *b == b'-') {
            last_id.clear();
            last_id.extend_from_slice(s);
        }
        0
    }

    pub fn del(&mut self, key: &str) {
        let mut buf = Vec::new();
        command(&mut buf, &["DEL", key]);
        self.out.write_all(&buf).expect("write to redis");
        self.reply(&mut Vec::new());
    }

    /// XADDs `n` entries with a field of `value` bytes, `depth` commands in flight at a time.
    pub fn xadd_pipelined(&mut self, key: &str, n: usize, depth: usize, value: &[u8]) {
        let mut buf = Vec::with_capacity(depth * (value.len() + 64));
        let mut sent = 0;
        let mut id = Vec::new();
        while sent < n {
            let k = depth.min(n - sent);
            buf.clear();
            for _ in 0..k {
                xadd(&mut buf, key, value);
            }
            self.out.write_all(&buf).expect("write to redis");
            for _ in 0..k {
                self.reply(&mut id);
            }
            sent += k;
        }
    }

    /// One XADD, its reply awaited.
    pub fn xadd_one(&mut self, key: &str, value: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        xadd(buf, key, value);
        self.out.write_all(buf).expect("write to redis");
        self.reply(&mut Vec::new());
    }

    /// Reads the whole stream with XRANGE, `count` entries a call; returns the entries read.
    pub fn xrange_all(&mut self, key: &str, count: usize) -> usize {
        let mut buf = Vec::new();
        let mut from = "-".to_string();
        let mut total = 0;
        let count = count.to_string();
        loop {
            buf.clear();
            command(&mut buf, &["XRANGE", key, &from, "+", "COUNT", &count]);
            self.out.write_all(&buf).expect("write to redis");
            let mut last = Vec::new();
            let n = self.reply(&mut last);
            total += n;
            if n == 0 {
                return total;
            }
            from = format!("({}", String::from_utf8(last).expect("an ASCII id"));
        }
    }
}
