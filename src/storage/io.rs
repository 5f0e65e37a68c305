//! The seam between the log and the file system: every write, fsync, truncation, rename and
//! removal goes through [`Fs`] and [`FsFile`], so tests can make any of them fail and can
//! take a crash image that holds only what was durable.
//!
//! Both implementations use real files: [`StdFs`] plainly, [`FaultyFs`] with fault injection
//! and bookkeeping of what has been synced.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, IoContext, Result};

/// Opens, renames, removes files and syncs directories.
pub trait Fs: Send + Sync + fmt::Debug + 'static {
    /// Opens a file for reading and writing, creating it if `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>>;
    /// Renames a file, replacing the target.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Reads at `pos`; returns the bytes read, 0 at the end of the file.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// True if the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// The underlying file, for memory maps.
    fn file(&self) -> &File;
    /// Whether small appends may be copied into a shared map of [`FsFile::file`] instead of
    /// going through [`FsFile::write_all_at`] (and the file extended with reserved blocks
    /// ahead of them). False unless an implementation opts in: one that watches or changes
    /// writes must see them all.
    fn appends_through_map(&self) -> bool {
        false
    }

    /// Reads exactly `buf.len()` bytes at `pos`, failing with `UnexpectedEof` if the file ends.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .open(path)
}

impl Fs for StdFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>> {
        Ok(Arc::new(StdFile(open_rw(path, create)?)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A real file.
#[derive(Debug)]
pub struct StdFile(File);

impl FsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn file(&self) -> &File {
        &self.0
    }
    fn appends_through_map(&self) -> bool {
        true
    }
}

/// Real files with faults on demand, for tests.
///
/// It counts writes and syncs and can fail the Nth one from now (a failed write may leave part
/// of its bytes behind, as a real short write does). It records how much of each file was
/// synced, and [`FaultyFs::crash`] cuts every file back to that, optionally leaving part of the
/// unsynced bytes as a torn tail, which is what a power cut leaves. After a crash every further
/// operation fails, so the log that was using it cannot write a clean-shutdown marker.
#[derive(Clone, Default)]
pub struct FaultyFs {
    state: Arc<FaultState>,
}

#[derive(Default)]
struct FaultState {
    /// Synced length of every file opened through this value.
    durable: Mutex<HashMap<PathBuf, u64>>,
    /// Fail when the counter reaches zero; `u64::MAX` disarms.
    writes_left: AtomicU64,
    syncs_left: AtomicU64,
    /// Crash when the counter of mutating operations reaches zero; `u64::MAX` disarms.
    ops_left: AtomicU64,
    write_error: Mutex<Option<io::ErrorKind>>,
    crashed: AtomicBool,
    writes: AtomicU64,
    syncs: AtomicU64,
    /// Small appends may go through a map of the file (see [`FaultyFs::map_appends`]).
    map_appends: AtomicBool,
    /// Called before every sync (see [`FaultyFs::before_sync`]).
    sync_hook: Mutex<Option<SyncHook>>,
}

type SyncHook = Arc<dyn Fn(&Path) + Send + Sync>;

impl fmt::Debug for FaultyFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyFs")
            .field("writes", &self.state.writes.load(Ordering::Relaxed))
            .field("syncs", &self.state.syncs.load(Ordering::Relaxed))
            .field("crashed", &self.state.crashed.load(Ordering::Relaxed))
            .finish()
    }
}

impl FaultyFs {
    /// A file system with no faults armed.
    pub fn new() -> Self {
        let fs = FaultyFs::default();
        fs.clear_faults();
        fs
    }

    /// Makes the write after the next `n` writes fail with `kind` (for example
    /// `StorageFull` for a full disk); the failing write stores the first half of its bytes.
    pub fn fail_write_after(&self, n: u64, kind: io::ErrorKind) {
        *self.state.write_error.lock() = Some(kind);
        self.state.writes_left.store(n, Ordering::SeqCst);
    }

    /// Makes the sync after the next `n` syncs fail with an I/O error. Syncs of directories
    /// count too.
    pub fn fail_sync_after(&self, n: u64) {
        self.state.syncs_left.store(n, Ordering::SeqCst);
    }

    /// Makes the machine crash (see [`FaultyFs::crash`] for what survives) at the operation
    /// after the next `n` that change something: writes, syncs, truncations, renames and
    /// removals. That operation and every later one fail.
    pub fn crash_after_ops(&self, n: u64) {
        self.state.ops_left.store(n, Ordering::SeqCst);
    }

    /// Lets small appends be copied into a map of the file, as they are on the real file
    /// system, until a crash. Those writes are neither counted nor failed; a crash keeps or
    /// cuts their bytes like any unsynced ones (the reserved length past them included).
    pub fn map_appends(&self) {
        self.state.map_appends.store(true, Ordering::SeqCst);
    }

    /// Calls `hook` with the path before every sync of a file or a directory, on the syncing
    /// thread: a test can stop work at a chosen step (a compaction syncs its staging directory
    /// `cleaning` before it installs; a group commit syncs the segment's `.log` file) and
    /// change the log meanwhile.
    pub fn before_sync(&self, hook: impl Fn(&Path) + Send + Sync + 'static) {
        *self.state.sync_hook.lock() = Some(Arc::new(hook));
    }

    fn run_sync_hook(&self, path: &Path) {
        let hook = self.state.sync_hook.lock().clone();
        if let Some(hook) = hook {
            hook(path);
        }
    }

    /// Disarms all faults.
    pub fn clear_faults(&self) {
        self.state.writes_left.store(u64::MAX, Ordering::SeqCst);
        self.state.syncs_left.store(u64::MAX, Ordering::SeqCst);
        self.state.ops_left.store(u64::MAX, Ordering::SeqCst);
    }

    /// Writes performed so far.
    pub fn writes(&self) -> u64 {
        self.state.writes.load(Ordering::SeqCst)
    }

    /// Syncs performed so far.
    pub fn syncs(&self) -> u64 {
        self.state.syncs.load(Ordering::SeqCst)
    }

    /// Whether the machine has crashed: by [`FaultyFs::crash`], or at the operation a
    /// [`FaultyFs::crash_after_ops`] countdown chose.
    pub fn crashed(&self) -> bool {
        self.state.crashed.load(Ordering::SeqCst)
    }

    /// Simulates a power cut: from now on every operation fails, and every file opened through
    /// this value is cut back to its synced length plus `keep(path, synced, written)` of its
    /// unsynced bytes (0 keeps only what was synced). Index files are left as they are: they
    /// are memory-mapped, and recovery must cope with stale ones.
    pub fn crash(&self, mut keep: impl FnMut(&Path, u64, u64) -> u64) -> io::Result<()> {
        self.state.crashed.store(true, Ordering::SeqCst);
        let durable = self.state.durable.lock();
        for (path, &synced) in durable.iter() {
            let is_index = path.extension().is_some_and(|e| e == "index" || e == "timeindex");
            let Ok(meta) = std::fs::metadata(path) else {
                continue; // removed since
            };
            if is_index || meta.len() <= synced {
                continue;
            }
            let extra = keep(path, synced, meta.len()).min(meta.len() - synced);
            OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(synced + extra)?;
        }
        Ok(())
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.state.crashed.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected: the machine has crashed"));
        }
        Ok(())
    }

    /// A mutating operation: fails if crashed, and crashes if the countdown says so.
    fn step(&self) -> io::Result<()> {
        self.check_alive()?;
        if Self::trips(&self.state.ops_left) {
            self.state.crashed.store(true, Ordering::SeqCst);
            return Err(io::Error::other("injected: the machine crashes now"));
        }
        Ok(())
    }

    /// Counts down; true when this call is the one to fail.
    fn trips(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                u64::MAX => None,
                0 => Some(u64::MAX),
                n => Some(n - 1),
            })
            .is_ok_and(|before| before == 0)
    }
}

impl Fs for FaultyFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FsFile>> {
        self.check_alive()?;
        let file = open_rw(path, create)?;
        let len = file.metadata()?.len();
        // A file that existed before is taken as durable; a new one starts empty.
        self.state.durable.lock().entry(path.to_path_buf()).or_insert(len);
        Ok(Arc::new(FaultyFile {
            file,
            path: path.to_path_buf(),
            fs: self.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        std::fs::rename(from, to)?;
        let mut durable = self.state.durable.lock();
        if let Some(len) = durable.remove(from) {
            durable.insert(to.to_path_buf(), len);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        std::fs::remove_file(path)?;
        self.state.durable.lock().remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.run_sync_hook(dir);
        self.step()?;
        self.state.syncs.fetch_add(1, Ordering::SeqCst);
        if Self::trips(&self.state.syncs_left) {
            return Err(io::Error::other("injected fsync failure"));
        }
        File::open(dir)?.sync_all()
    }
}

/// A file opened through [`FaultyFs`].
#[derive(Debug)]
struct FaultyFile {
    file: File,
    path: PathBuf,
    fs: FaultyFs,
}

impl FsFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.fs.check_alive()?;
        self.file.read_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.fs.step()?;
        let state = &self.fs.state;
        state.writes.fetch_add(1, Ordering::SeqCst);
        if FaultyFs::trips(&state.writes_left) {
            self.file.write_all_at(&buf[..buf.len() / 2], pos)?;
            let kind = state.write_error.lock().unwrap_or(io::ErrorKind::Other);
            return Err(io::Error::new(kind, "injected write failure"));
        }
        self.file.write_all_at(buf, pos)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.run_sync_hook(&self.path);
        self.fs.step()?;
        let state = &self.fs.state;
        state.syncs.fetch_add(1, Ordering::SeqCst);
        if FaultyFs::trips(&state.syncs_left) {
            return Err(io::Error::other("injected fsync failure"));
        }
        // Hold the bookkeeping lock across the sync so a concurrent crash sees either the old
        // or the new durable length, never a length the disk does not have.
        let mut durable = state.durable.lock();
        let len = self.file.metadata()?.len();
        self.file.sync_data()?;
        durable.insert(self.path.clone(), len);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs.step()?;
        self.file.set_len(len)?;
        // Shrinking makes the cut-off bytes undurable at once; growth is durable only after a
        // sync, like the data written into it.
        let mut durable = self.fs.state.durable.lock();
        let d = durable.entry(self.path.clone()).or_insert(0);
        *d = (*d).min(len);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.fs.check_alive()?;
        Ok(self.file.metadata()?.len())
    }

    fn file(&self) -> &File {
        &self.file
    }

    fn appends_through_map(&self) -> bool {
        let state = &self.fs.state;
        state.map_appends.load(Ordering::SeqCst) && !state.crashed.load(Ordering::SeqCst)
    }
}

/// Takes the exclusive lock of a data directory: `flock` on `dir/name`, so a second open in
/// this process or another fails with [`Error::Locked`] instead of corrupting anything. The
/// lock lasts as long as the returned file.
pub(crate) fn lock_dir(dir: &Path, name: &str) -> Result<File> {
    let path = dir.join(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx("open", &path)?;
    // A reader in another process may hold the lock shared for a moment, to learn whether
    // a writer holds it (see `follow`): a lock still held after a few tries is a writer's.
    for attempt in 0.. {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if attempt < 20 => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(e).ctx("lock", &path),
        }
    }
    unreachable!("the loop returns")
}

/// Whether a process holds `dir`'s lock file `name` (a writer has the directory open).
/// Takes the lock shared for a moment when no one holds it; `lock_dir` waits that out.
pub(crate) fn is_locked(dir: &Path, name: &str) -> Result<bool> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).ctx("open", &path),
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e).ctx("lock", &path),
    }
}

/// Refuses a directory that lacks its marker file `expected` yet holds anything but what a
/// crash while creating it can leave (a lock file and half-written `.tmp` files).
pub(crate) fn refuse_foreign_files(dir: &Path, expected: &str) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let name = entry.ctx("list", dir)?.file_name();
        let name = name.to_string_lossy();
        if name != ".lock" && !name.ends_with(".tmp") {
            return Err(Error::NotALog {
                path: dir.to_path_buf(),
                reason: format!("it has no {expected} but holds {name:?}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_synced_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let path = dir.path().join("a.log");
        let f = fs.open(&path, true).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(b"-lost", 7).unwrap();
        fs.crash(|_, _, _| 0).unwrap();
        assert!(f.write_all_at(b"x", 0).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"durable");
    }

    #[test]
    fn the_nth_write_and_sync_fail_once() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new();
        let f = fs.open(&dir.path().join("a"), true).unwrap();
        fs.fail_write_after(1, io::ErrorKind::StorageFull);
        f.write_all_at(b"ok", 0).unwrap();
        let err = f.write_all_at(b"full", 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        f.write_all_at(b"again", 4).unwrap();
        fs.fail_sync_after(0);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
    }
}
