//! Waiting for another process's changes to files: inotify on Linux; elsewhere, a short
//! sleep (the caller looks again after it). With the map in `mmap`, this module holds the
//! crate's unsafe code: four system calls through `libc`.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Entries created, removed or renamed in a directory (not writes to its files).
    Entries,
    /// Writes to a file.
    Writes,
}

/// A set of watched paths and the means to wait on them.
#[derive(Debug)]
pub(crate) struct Watcher {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    /// Watch descriptors by path.
    watches: HashMap<PathBuf, i32>,
    /// Watch descriptors that reported something since [`changed`](Self::changed) last
    /// asked about them.
    fired: HashSet<i32>,
}

#[cfg(target_os = "linux")]
impl Watcher {
    pub(crate) fn new() -> io::Result<Watcher> {
        use std::os::fd::FromRawFd;
        // SAFETY: no pointers are passed; a valid descriptor is owned from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watcher {
            // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            watches: HashMap::new(),
            fired: HashSet::new(),
        })
    }

    /// Watches `path` (once; a path already watched costs nothing). A missing path is
    /// `NotFound`: the caller watches its directory's entries and tries again.
    pub(crate) fn watch(&mut self, path: &Path, what: Watch) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        if self.watches.contains_key(path) {
            return Ok(());
        }
        let mask = match what {
            Watch::Entries => libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO,
            Watch::Writes => libc::IN_MODIFY,
        } | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        let name = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), name.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.watches.insert(path.to_path_buf(), wd);
        Ok(())
    }

    /// Waits until something watched changes or `timeout` passes, and takes the events.
    /// Watches the kernel dropped (their path went) are forgotten, to be made again.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid `pollfd`, and its count.
        let n = unsafe { libc::poll(&mut poll, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        self.drain()
    }

    /// Whether `path` reported a change (or its watch ended) since the last call for it.
    pub(crate) fn changed(&mut self, path: &Path) -> bool {
        match self.watches.get(path) {
            Some(wd) => self.fired.remove(wd),
            // Not watched (gone, or never there): nothing says it did not change.
            None => true,
        }
    }

    /// Reads every queued event, forgetting the watches that ended.
    fn drain(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let mut at = 0;
            let n = n as usize;
            while at + HEAD <= n {
                // The kernel writes whole events: the watch descriptor, the mask, the cookie and
                // the name's length, then the name.
                let field =
                    |i: usize| u32::from_ne_bytes(buf[at + 4 * i..at + 4 * i + 4].try_into().expect("4"));
                let (wd, mask, len) = (field(0) as i32, field(1), field(3) as usize);
                self.fired.insert(wd);
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    // Events were lost: everything may have changed.
                    self.fired.extend(self.watches.values().copied());
                }
                if mask & libc::IN_IGNORED != 0 {
                    self.watches.retain(|_, w| *w != wd);
                }
                at += HEAD + len;
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl Watcher {
    pub(crate) fn new() -> io::Result<Watcher> {
        Ok(Watcher {
            watches: HashMap::new(),
            fired: HashSet::new(),
        })
    }

    pub(crate) fn watch(&mut self, path: &Path, _: Watch) -> io::Result<()> {
        self.watches.insert(path.to_path_buf(), 0);
        Ok(())
    }

    /// Nothing tells here: everything may have changed.
    pub(crate) fn changed(&mut self, _: &Path) -> bool {
        true
    }

    /// No notification here: a short sleep, after which the caller looks again.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        std::thread::sleep(timeout.min(Duration::from_millis(20)));
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_write_wakes_the_waiter_and_a_removed_path_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("watermark");
        std::fs::write(&file, b"0").unwrap();
        let mut w = Watcher::new().unwrap();
        w.watch(&file, Watch::Writes).unwrap();
        w.watch(dir.path(), Watch::Entries).unwrap();
        assert!(w.watch(&dir.path().join("missing"), Watch::Writes).is_err());

        let writer = {
            let file = file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(&file, b"1").unwrap();
            })
        };
        let start = Instant::now();
        w.wait(Duration::from_secs(30)).unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the write woke the waiter"
        );
        writer.join().unwrap();
        assert!(w.changed(&file), "the write is reported for the file");
        assert!(!w.changed(&file), "and only once");
        assert!(!w.changed(dir.path()), "not for its directory");

        std::fs::remove_file(&file).unwrap();
        w.wait(Duration::from_secs(30)).unwrap();
        // The deletion's events may come in more than one read.
        w.wait(Duration::from_millis(10)).unwrap();
        assert!(
            !w.watches.contains_key(&file),
            "the removed file's watch is forgotten"
        );
        assert!(w.watches.contains_key(dir.path()));
    }
}
