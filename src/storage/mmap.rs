//! The crate's only `unsafe` code: memory maps of index files, seen as slices of atomic words.
//!
//! An index is appended by the partition's single writer while readers binary-search it. Seeing
//! the map as `[AtomicU32]` makes that sharing sound without locks: the writer stores an
//! entry's words and then publishes the entry count with release ordering; readers load the
//! count with acquire ordering and touch only entries below it.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use memmap2::{MmapMut, MmapOptions};

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

    /// Writes the mapped pages back to the file (`msync`).
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }
}
