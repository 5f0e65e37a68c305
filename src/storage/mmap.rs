//! The crate's only `unsafe` code: memory maps of index files, seen as slices of atomic words,
//! and of the active segment's tail, written by small appends.
//!
//! An index is appended by the partition's single writer while readers binary-search it. Seeing
//! the map as `[AtomicU32]` makes that sharing sound without locks: the writer stores an
//! entry's words and then publishes the entry count with release ordering; readers load the
//! count with acquire ordering and touch only entries below it.
//!
//! A small append costs a `pwrite` system call, most of the time of appending one record
//! (about 1 us on a virtual machine, a tenth of that for the copy). [`MappedTail`] copies such
//! batches into a shared map of the file instead: the bytes land in the same page cache a
//! `pwrite` fills, so they survive a crash of the process alike, `fdatasync` writes them out,
//! and readers see them through `pread`. Readers never touch the map.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use memmap2::{Advice, MmapMut, MmapOptions, MmapRaw};

/// A shared, writable map of the first `len` bytes of a file, as 32-bit words.
pub(crate) struct MappedWords {
    map: MmapMut,
    words: NonNull<AtomicU32>,
    len: usize,
}

// SAFETY: the map is only ever accessed through `&[AtomicU32]`, which is `Sync`; the raw
// pointer is just a cached view of memory owned by `map`, which is `Send + Sync` itself.
unsafe impl Send for MappedWords {}
// SAFETY: as above.
unsafe impl Sync for MappedWords {}

impl MappedWords {
    /// Maps the first `len` bytes of `file`; `len` must be a positive multiple of 4.
    ///
    /// The caller (an index) promises to keep the file at least `len` bytes long while the map
    /// lives: it owns the file's only handle in this process, shrinks it only after dropping the
    /// map, and the data directory's lock keeps other rivulet processes away. Touching a mapped
    /// page past the end of the file would raise SIGBUS.
    pub(crate) fn new(file: &File, len: usize) -> io::Result<Self> {
        assert!(
            len > 0 && len.is_multiple_of(4),
            "map length {len} is not a positive multiple of 4"
        );
        if file.metadata()?.len() < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file is shorter than the map",
            ));
        }
        // SAFETY: the file is at least `len` bytes long (checked above) and stays so while the
        // map lives (the caller's promise). Other code may write the same pages only through
        // this map's atomic view, so the bytes are never aliased by a `&mut [u8]`.
        let mut map = unsafe { MmapOptions::new().len(len).map_mut(file)? };
        let words = NonNull::new(map.as_mut_ptr().cast::<AtomicU32>()).expect("mmap returns non-null");
        Ok(MappedWords { map, words, len })
    }

    /// The mapped bytes as words, in the file's order (each word holds four file bytes in
    /// memory order; callers convert with `u32::from_be`/`to_be`).
    pub(crate) fn words(&self) -> &[AtomicU32] {
        // SAFETY: the pointer comes from a live map of `len` bytes, page-aligned (so aligned
        // for `AtomicU32`, which has the size and alignment of `u32`), and valid for the
        // lifetime of `&self` because `self.map` is dropped only with `self`. The pages stay
        // backed by the file (see `new`). All access goes through atomics, so concurrent
        // stores by the writer and loads by readers are not data races.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr(), self.len / 4) }
    }

    /// Turns off read-ahead for the pages from byte `from` on, which the writer fills one
    /// entry at a time: otherwise the first write into an untouched stretch of them makes the
    /// kernel read ahead (allocate and zero) many pages at once, which stalled one append for
    /// 5.6-7.0 ms. The entries before `from` keep read-ahead for the scan that checks them on
    /// open.
    pub(crate) fn no_read_ahead_from(&self, from: usize) -> io::Result<()> {
        if from >= self.len {
            return Ok(());
        }
        self.map.advise_range(Advice::Random, from, self.len - from)
    }

    /// Writes the mapped pages back to the file (`msync`).
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }
}

/// Bytes of file one map of the tail covers; a write past it maps the next window. Bounds the
/// address space and the resident file pages the writer holds, whatever the segment size.
/// Small, because unmapping costs about half a microsecond per dirty page and falls on the one
/// append that crosses into the next window: 4 MiB made that append take 0.5-0.6 ms, 256 KiB
/// takes some 20 us, for the same cost per byte.
const WINDOW: u64 = 256 << 10;

/// Bytes of file reserved at a time ahead of mapped writes (with `fallocate`, so a full disk is
/// an error from that call, never a fault while copying into the map). Trimmed when the segment
/// is sealed or the log closed; a crash leaves it as zeros past the last batch, which recovery
/// cuts.
const RESERVE: u64 = 256 << 10;

const PAGE: u64 = 4096;

/// Appends to a file through a shared map of a window over its tail. Owned by the segment's
/// writer.
///
/// The file's owner promises to shorten the file only through [`MappedTail::shorten`] (a touch
/// of a mapped page past the end of the file would raise SIGBUS). The data directory's
/// lock keeps other rivulet processes away from the file.
#[derive(Debug, Default)]
pub(crate) struct MappedTail {
    /// The mapped window and the file position of its first byte.
    window: Option<(MmapRaw, u64)>,
    /// The file's blocks are allocated (and its length at least this) up to here.
    reserved: u64,
    /// Mapping or reserving is not supported here: every write goes through `pwrite`.
    unsupported: bool,
}

impl MappedTail {
    /// Copies `bytes` into the file at `pos` through the map; returns false if it could not
    /// (no reservation: a full disk, a file system without `fallocate`), and the caller writes
    /// them with a system call instead, which reports any error.
    pub(crate) fn write(&mut self, file: &File, pos: u64, bytes: &[u8]) -> bool {
        let end = pos + bytes.len() as u64;
        if self.unsupported || bytes.len() as u64 > WINDOW - PAGE {
            return false;
        }
        if end > self.reserved {
            let to = end.next_multiple_of(RESERVE);
            match reserve(file, self.reserved, to) {
                Ok(()) => self.reserved = to,
                Err(e) => {
                    self.unsupported = e.kind() == io::ErrorKind::Unsupported;
                    return false;
                }
            }
        }
        let covered = |(_, start): &(MmapRaw, u64)| *start <= pos && end <= start + WINDOW;
        if !self.window.as_ref().is_some_and(covered) {
            // Unmap the old window first: its dirty pages stay in the page cache.
            self.window = None;
            let start = pos - pos % PAGE;
            match MmapOptions::new()
                .offset(start)
                .len(WINDOW as usize)
                .map_raw(file)
            {
                Ok(map) => {
                    // Without it, the first write fault in a stretch of the window makes the
                    // kernel read ahead (allocate and zero) some 64 pages at once, a 100-200 us
                    // stall for one append in every 1,500 of 100 B; page by page, the same work
                    // is spread over the appends that write each page.
                    if let Err(e) = map.advise(Advice::Random) {
                        log::debug!("no madvise(MADV_RANDOM) on the segment's tail: {e}");
                    }
                    self.window = Some((map, start));
                }
                Err(e) => {
                    log::debug!("appends go through pwrite: mapping the segment failed: {e}");
                    self.unsupported = true;
                    return false;
                }
            }
        }
        let (map, start) = self.window.as_ref().expect("mapped above");
        // SAFETY: the window maps `WINDOW` bytes from `start`, and `[pos, end)` lies inside it
        // (checked above), so the destination is in bounds. The file is at least `reserved >=
        // end` bytes long, and only `shorten` makes it shorter (the owner's promise), after
        // unmapping, so the pages are backed by the file. Nothing else in this process writes
        // these bytes or holds a reference to them (readers use `pread`), and `bytes` is a
        // separate buffer.
        unsafe {
            let dst = map.as_mut_ptr().add((pos - start) as usize);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
        }
        true
    }

    /// Shortens the file to `len` with `cut` (which must do just that), unmapping the window
    /// first.
    pub(crate) fn shorten<E>(&mut self, len: u64, cut: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        self.window = None;
        cut()?;
        self.reserved = self.reserved.min(len);
        Ok(())
    }

    /// Whether blocks are reserved past `len` (the file is longer).
    pub(crate) fn reserved_past(&self, len: u64) -> bool {
        self.reserved > len
    }
}

/// Allocates the file's blocks in `[from, to)`, extending it to at least `to`.
#[cfg(target_os = "linux")]
fn reserve(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (offset, len) = (from as libc::off_t, (to - from) as libc::off_t);
    loop {
        // SAFETY: `fallocate` takes a descriptor this `File` keeps open and plain integers.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return Err(io::ErrorKind::Unsupported.into()),
            _ => return Err(e),
        }
    }
}

/// Without `fallocate`, appends always go through `pwrite`.
#[cfg(not(target_os = "linux"))]
fn reserve(_: &File, _: u64, _: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// Bytes `[pos, pos + len)` of the expected file: a pattern that shifts every byte.
    fn pattern(pos: u64, len: usize) -> Vec<u8> {
        (pos..pos + len as u64).map(|p| (p * 7 + p / 251) as u8).collect()
    }

    /// An empty file in `dir`, open for reading and writing.
    fn new_file(dir: &tempfile::TempDir) -> File {
        File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap()
    }

    #[test]
    fn mapped_and_plain_writes_build_the_file_across_windows_and_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let file = new_file(&dir);
        let mut tail = MappedTail::default();
        let mut pos = 0u64;
        let mut i = 0usize;
        // Past two windows: small writes through the map, every 50th a large one through
        // `pwrite` (which may pass the reservation), a straddle of each window's end included.
        while pos < 2 * WINDOW + RESERVE {
            let len = if i % 50 == 49 { 300_000 } else { 100 + i % 900 };
            let bytes = pattern(pos, len);
            if len > 1000 || !tail.write(&file, pos, &bytes) {
                assert!(len > 1000, "a small write at {pos} went through the map");
                file.write_all_at(&bytes, pos).unwrap();
            }
            pos += len as u64;
            i += 1;
            let file_len = file.metadata().unwrap().len();
            assert!(file_len >= pos, "the file covers what was written");
            assert!(tail.reserved_past(pos) == (file_len > pos));
        }
        // A cut inside the mapped window, then more writes over the cut-away bytes.
        let cut = pos - 5000;
        tail.shorten(cut, || file.set_len(cut)).unwrap();
        assert!(!tail.reserved_past(cut));
        assert_eq!(file.metadata().unwrap().len(), cut);
        pos = cut;
        for _ in 0..100 {
            assert!(tail.write(&file, pos, &pattern(pos, 700)));
            pos += 700;
        }
        tail.shorten(pos, || file.set_len(pos)).unwrap();
        drop(tail);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut got).unwrap();
        assert_eq!(got.len() as u64, pos);
        assert!(got == pattern(0, pos as usize), "the file holds every write");
    }

    #[test]
    fn read_ahead_can_be_turned_off_from_any_byte_and_the_words_stay() {
        let dir = tempfile::tempdir().unwrap();
        let file = new_file(&dir);
        let len = 3 * 4096 + 100;
        file.set_len(len as u64).unwrap();
        let map = MappedWords::new(&file, len).unwrap();
        for (i, w) in map.words().iter().enumerate().step_by(7) {
            w.store(i as u32, std::sync::atomic::Ordering::Relaxed);
        }
        // Unaligned starts, a page boundary, the end and past it.
        for from in [0, 6, 4096, 4100, len - 4, len, len + 4096] {
            map.no_read_ahead_from(from).unwrap();
        }
        map.flush().unwrap();
        drop(map);
        let mut got = vec![0u8; len];
        file.read_exact_at(&mut got, 0).unwrap();
        for (i, word) in got.chunks_exact(4).enumerate() {
            let want = if i % 7 == 0 { i as u32 } else { 0 };
            assert_eq!(u32::from_ne_bytes(word.try_into().unwrap()), want, "word {i}");
        }
    }
}
