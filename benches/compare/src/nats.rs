//! NATS JetStream: `nats-server -js` with file storage, and a small client of NATS's text
//! protocol over one connection: publishes to a stream with their acknowledgements pipelined,
//! and replay through an ephemeral push consumer.
//!
//! nats-server 2.9 (Debian 12) writes its file store through the page cache and fsyncs it in
//! the background every two minutes, so its figures compare with rivulet's `Fsync::Never`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

use crate::server::Server;

pub const STREAM: &str = "BENCH";
const SUBJECT: &str = "bench";

pub fn start(root: &Path) -> Server {
    Server::start("nats-server", root, |port, dir| {
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    })
}

pub struct Conn {
    out: TcpStream,
    input: BufReader<TcpStream>,
    line: String,
    payload: Vec<u8>,
    next_sid: u32,
}

/// One message from the server, the others (PING, +OK) handled on the way.
struct Msg {
    sid: u32,
}

impl Conn {
    pub fn new(server: &Server) -> Conn {
        let out = server.connect();
        let input = BufReader::with_capacity(1 << 20, out.try_clone().expect("clone the socket"));
        let mut c = Conn {
            out,
            input,
            line: String::new(),
            payload: Vec::new(),
            next_sid: 1,
        };
        c.read_line();
        assert!(
            c.line.starts_with("INFO "),
            "nats greets with INFO, got {:?}",
            c.line
        );
        c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nPING\r\n");
        c.read_line();
        assert_eq!(c.line.trim_end(), "PONG", "nats answers the first PING");
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).expect("write to nats");
    }

    fn read_line(&mut self) {
        self.line.clear();
        self.input.read_line(&mut self.line).expect("read from nats");
        assert!(!self.line.is_empty(), "nats closed the connection");
    }

    fn subscribe(&mut self, subject: &str) -> u32 {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes());
        sid
    }

    /// The next message (its payload in `self.payload`), answering PINGs on the way.
    fn next_msg(&mut self) -> Msg {
        loop {
            self.read_line();
            let line = self.line.trim_end();
            if line == "PING" {
                self.send(b"PONG\r\n");
                continue;
            }
            if line == "+OK" || line == "PONG" {
                continue;
            }
            assert!(!line.starts_with("-ERR"), "nats: {line}");
            // MSG <subject> <sid> [reply] <bytes> or HMSG <subject> <sid> [reply] <hdr> <bytes>
            let mut words = line.split(' ');
            let kind = words.next();
            assert!(
                matches!(kind, Some("MSG" | "HMSG")),
                "unexpected nats line {line:?}"
            );
            let _subject = words.next();
            let sid: u32 = words.next().and_then(|w| w.parse().ok()).expect("a sid");
            let size: usize = line
                .rsplit(' ')
                .next()
                .and_then(|w| w.parse().ok())
                .expect("a size");
            self.payload.resize(size + 2, 0);
            self.input.read_exact(&mut self.payload).expect("read a payload");
            self.payload.truncate(size);
            return Msg { sid };
        }
    }

    /// A JetStream API request; panics on an error reply.
    fn api(&mut self, subject: &str, body: &str) {
        let inbox = format!("_INBOX.api.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        self.send(format!("PUB {subject} {inbox} {}\r\n{body}\r\n", body.len()).as_bytes());
        let m = self.next_msg();
        assert_eq!(m.sid, sid);
        let reply = String::from_utf8_lossy(&self.payload).into_owned();
        assert!(!reply.contains("\"error\""), "nats {subject}: {reply}");
        self.send(format!("UNSUB {sid}\r\n").as_bytes());
    }

    /// A file-storage stream on the benchmark subject, created anew (empty).
    pub fn create_stream(&mut self) {
        self.delete_stream();
        self.api(
            &format!("$JS.API.STREAM.CREATE.{STREAM}"),
            &format!("{{\"name\":\"{STREAM}\",\"subjects\":[\"{SUBJECT}\"],\"storage\":\"file\"}}"),
        );
    }

    fn delete_stream(&mut self) {
        let inbox = format!("_INBOX.api.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        self.send(format!("PUB $JS.API.STREAM.DELETE.{STREAM} {inbox} 0\r\n\r\n").as_bytes());
        let m = self.next_msg();
        assert_eq!(m.sid, sid);
        self.send(format!("UNSUB {sid}\r\n").as_bytes());
    }

    /// Publishes `n` messages of `value`, at most `window` awaiting their acknowledgement.
    pub fn publish(&mut self, n: usize, window: usize, value: &[u8]) {
        let inbox = format!("_INBOX.ack.{}", self.next_sid);
        let sid = self.subscribe(&inbox);
        let mut header = format!("PUB {SUBJECT} {inbox} {}\r\n", value.len()).into_bytes();
        let mut buf = Vec::with_capacity(window * (header.len() + value.len() + 2));
        let (mut sent, mut acked) = (0, 0);
        while acked < n {
            buf.clear();
            while sent < n && sent - acked < window {
                buf.extend_from_slice(&header);
                buf.extend_from_slice(value);
                buf.extend_from_slice(b"\r\n");
                sent += 1;
            }
            if !buf.is_empty() {
                self.send(&buf);
            }
            // Take the acknowledgements for half a window before sending more.
            let until = (acked + window / 2).max(1).min(sent);
            while acked < until {
                let m = self.next_msg();
                assert_eq!(m.sid, sid);
                assert!(
                    !self.payload.windows(7).any(|w| w == b"\"error\""),
                    "nats publish: {}",
                    String::from_utf8_lossy(&self.payload)
                );
                acked += 1;
            }
        }
        header.clear();
        self.send(format!("UNSUB {sid}\r\n").as_bytes());
    }

    /// Reads the stream's `n` messages through a new ephemeral push consumer; returns the
    /// value bytes read.
    pub fn replay(&mut self, n: usize) -> usize {
        let deliver = format!("_INBOX.replay.{}", self.next_sid);
        let sid = self.subscribe(&deliver);
        // The consumer starts delivering before (or after) the reply to its creation, so the
        // reply is read as one more message to skip, not awaited first.
        let inbox = format!("_INBOX.api.{}", self.next_sid);
        let api = self.subscribe(&inbox);
        let body = format!(
            "{{\"stream_name\":\"{STREAM}\",\"config\":{{\"deliver_subject\":\"{deliver}\",\
             \"deliver_policy\":\"all\",\"ack_policy\":\"none\",\"replay_policy\":\"instant\"}}}}"
        );
        self.send(
            format!(
                "PUB $JS.API.CONSUMER.CREATE.{STREAM} {inbox} {}\r\n{body}\r\n",
                body.len()
            )
            .as_bytes(),
        );
        let mut bytes = 0;
        let mut got = 0;
        while got < n {
            let m = self.next_msg();
            if m.sid == sid {
                got += 1;
                bytes += self.payload.len();
            } else if m.sid == api {
                let reply = String::from_utf8_lossy(&self.payload);
                assert!(!reply.contains("\"error\""), "nats consumer create: {reply}");
            }
        }
        self.send(format!("UNSUB {sid}\r\nUNSUB {api}\r\n").as_bytes());
        bytes
    }
}
