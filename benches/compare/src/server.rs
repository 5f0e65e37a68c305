//! A peer server started by the harness on a free loopback port, in a scratch directory, and
//! stopped by its PID when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Whether `program` can be started (it is on the PATH).
pub fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A port nothing listens on now (the kernel's choice for a socket bound to port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

impl Server {
    /// Starts `program` with the arguments `args` makes of the port and the scratch
    /// directory, and waits (at most 10 s) until it accepts connections.
    pub fn start(program: &str, root: &Path, args: impl FnOnce(u16, &Path) -> Vec<String>) -> Server {
        let dir = tempfile::tempdir_in(root).expect("a scratch directory");
        let port = free_port();
        let child = Command::new(program)
            .args(args(port, dir.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let mut server = Server {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{program} exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{program} did not accept connections on port {port} within 10 s");
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the server");
        s.set_nodelay(true).expect("TCP_NODELAY");
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
