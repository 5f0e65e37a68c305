//! Small metadata files: versioned, CRC-framed, replaced atomically.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "RVMT"
//!      4     4  payload length (u32 BE)
//!      8     4  CRC-32C of the payload (u32 BE)
//!     12     -  payload: postcard encoding of the value
//! ```
//!
//! A file is written to `<name>.tmp`, synced, renamed over `<name>`, and the directory is
//! synced, so a crash leaves either the old or the new file, whole.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, IoContext, Result};
use crate::storage::io::Fs;

const MAGIC: &[u8; 4] = b"RVMT";
const FRAME: usize = 12;
/// The largest payload a metadata file holds: what its 32-bit length field can say. Writing
/// more is refused ([`Error::MetadataTooLarge`]); reading accepts anything up to it, so every
/// file this code writes, it reads back. (A damaged length cannot make a read allocate more
/// than the file: it must match the file's size.)
pub const MAX_METADATA_BYTES: usize = u32::MAX as usize;

/// Writes `value` to `path` atomically.
pub(crate) fn write<T: Serialize>(fs: &dyn Fs, path: &Path, value: &T) -> Result<()> {
    let payload = postcard::to_stdvec(value).expect("metadata values serialize");
    check_size(path, payload.len(), MAX_METADATA_BYTES)?;
    let mut bytes = Vec::with_capacity(FRAME + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&crate::storage::format::crc32c(&payload).to_be_bytes());
    bytes.extend_from_slice(&payload);

    replace_file(fs, path, &bytes)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir).ctx("fsync", dir)
}

/// Puts `bytes` at `path` whole or not at all: written to `<path>.tmp`, synced, renamed over
/// `path`. The caller syncs the directory when the rename must be durable.
pub(crate) fn replace_file(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let file = fs.open(&tmp, true).ctx("create", &tmp)?;
    file.set_len(0).ctx("truncate", &tmp)?;
    file.write_all_at(bytes, 0).ctx("write", &tmp)?;
    file.sync_data().ctx("fsync", &tmp)?;
    drop(file);
    fs.rename(&tmp, path).ctx("rename", &tmp)
}

/// Refuses a payload of `size` bytes past `max`.
fn check_size(path: &Path, size: usize, max: usize) -> Result<()> {
    if size > max {
        return Err(Error::MetadataTooLarge {
            path: path.to_path_buf(),
            size,
            max,
        });
    }
    Ok(())
}

/// Reads the value at `path`; `Ok(None)` if there is no such file.
pub(crate) fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    read_with(path, |payload| {
        postcard::from_bytes(payload).map_err(|e| e.to_string())
    })
}

/// Reads the payload at `path` and decodes it with `decode` (for files whose layout depends on
/// a version stored first); `Ok(None)` if there is no such file.
pub(crate) fn read_with<T>(
    path: &Path,
    decode: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("read", path),
    };
    let damaged = |reason: String| Error::CorruptMetadata {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < FRAME || &bytes[..4] != MAGIC {
        return Err(damaged("no RVMT header".into()));
    }
    let len = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let crc = u32::from_be_bytes(bytes[8..12].try_into().unwrap());
    if bytes.len() != FRAME + len {
        return Err(damaged(format!(
            "payload length {len} does not match the file's {} bytes",
            bytes.len()
        )));
    }
    let payload = &bytes[FRAME..];
    let actual = crate::storage::format::crc32c(payload);
    if actual != crc {
        return Err(damaged(format!(
            "CRC {crc:#010x} stored, {actual:#010x} computed"
        )));
    }
    decode(payload)
        .map(Some)
        .map_err(|e| damaged(format!("undecodable payload: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::StdFs;

    #[test]
    fn a_file_far_over_a_mebibyte_reads_back_and_an_oversized_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.meta");
        let big: Vec<String> = (0..40_000).map(|i| format!("{i:0>200}")).collect();
        write(&StdFs, &path, &big).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 4 << 20);
        assert_eq!(read::<Vec<String>>(&path).unwrap(), Some(big));
        assert!(matches!(
            check_size(&path, 11, 10),
            Err(Error::MetadataTooLarge {
                size: 11,
                max: 10,
                ..
            })
        ));
        check_size(&path, 10, 10).unwrap();
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        version: u32,
        start: i64,
    }

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.meta");
        assert_eq!(read::<Sample>(&path).unwrap(), None);
        let v = Sample {
            version: 1,
            start: -7,
        };
        write(&StdFs, &path, &v).unwrap();
        assert_eq!(read::<Sample>(&path).unwrap(), Some(v));
        assert!(!dir.path().join("x.tmp").exists());
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read::<Sample>(&path),
            Err(Error::CorruptMetadata { .. })
        ));
    }
}
