//! The compression codecs of RecordBatch v2. In a compressed batch everything after the 61-byte
//! header (the records) is one compressed stream. Each codec is behind a cargo feature.
//!
//! Snappy is written with the xerial framing that Kafka's Java client uses, and read both framed
//! and raw (librdkafka writes raw snappy), as the Java client reads it.

use crate::error::BatchError;
use crate::storage::format::Compression;

/// The most bytes one batch may decompress to. It bounds the memory a hostile or corrupt batch
/// can make a reader allocate; legitimate batches are far smaller (`max.message.bytes` is 1 MiB
/// by default, and codecs rarely exceed 20:1 on real data).
pub const MAX_DECOMPRESSED_BYTES: usize = 128 << 20;

/// Appends `input` compressed with `codec` to `out`.
pub(crate) fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => gzip::compress(input, out),
        Compression::Snappy => snappy::compress(input, out),
        Compression::Lz4 => lz4::compress(input, out),
        Compression::Zstd => zstd::compress(input, out),
    }
}

/// Decompresses `input`, refusing to produce more than [`MAX_DECOMPRESSED_BYTES`].
#[cfg(test)]
fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, BatchError> {
    decompress_within(codec, input, MAX_DECOMPRESSED_BYTES)
}

/// Decompresses `input`, stopping with an error as soon as the output would pass `limit`
/// bytes (at most [`MAX_DECOMPRESSED_BYTES`]): no more than that is ever allocated or
/// decompressed.
pub(crate) fn decompress_within(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, BatchError> {
    let limit = limit.min(MAX_DECOMPRESSED_BYTES);
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => gzip::decompress(input, limit),
        Compression::Snappy => snappy::decompress(input, limit),
        Compression::Lz4 => lz4::decompress(input, limit),
        Compression::Zstd => zstd::decompress(input, limit),
    }
}

fn failed(codec: Compression, reason: impl ToString) -> BatchError {
    BatchError::Decompression {
        codec,
        reason: reason.to_string(),
    }
}

/// Reads a decompressing stream to its end, stopping with an error past the size limit.
#[allow(dead_code)] // unused when every streaming codec is disabled
fn read_bounded(codec: Compression, reader: impl std::io::Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    use std::io::Read;
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| failed(codec, e))?;
    if out.len() > limit {
        return Err(too_large(codec, limit));
    }
    Ok(out)
}

fn too_large(codec: Compression, limit: usize) -> BatchError {
    failed(codec, format!("output exceeds the limit of {limit} bytes"))
}

#[cfg(feature = "gzip")]
mod gzip {
    use super::*;
    use std::io::Write;

    pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        // Writing to a Vec cannot fail.
        enc.write_all(input).expect("write to Vec");
        enc.finish().expect("write to Vec");
        Ok(())
    }

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        read_bounded(Compression::Gzip, flate2::read::GzDecoder::new(input), limit)
    }
}

#[cfg(feature = "lz4")]
mod lz4 {
    use super::*;
    use std::io::Write;

    pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        let mut enc = lz4_flex::frame::FrameEncoder::new(out);
        enc.write_all(input).expect("write to Vec");
        enc.finish().expect("write to Vec");
        Ok(())
    }

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        read_bounded(Compression::Lz4, lz4_flex::frame::FrameDecoder::new(input), limit)
    }
}

#[cfg(feature = "zstd")]
mod zstd {
    use super::*;

    pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        // Level 3 is zstd's own default and Kafka's.
        let compressed = ::zstd::bulk::compress(input, 3).map_err(|e| failed(Compression::Zstd, e))?;
        out.extend_from_slice(&compressed);
        Ok(())
    }

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        let decoder =
            ::zstd::stream::read::Decoder::with_buffer(input).map_err(|e| failed(Compression::Zstd, e))?;
        read_bounded(Compression::Zstd, decoder, limit)
    }
}

#[cfg(feature = "snappy")]
mod snappy {
    use super::*;

    /// The xerial (snappy-java) stream header: magic, then version 1 and minimum compatible
    /// version 1, both big-endian 32-bit.
    const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
    /// snappy-java's default block size.
    const BLOCK: usize = 32 * 1024;

    pub(super) fn compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
        out.extend_from_slice(XERIAL_HEADER);
        let mut encoder = snap::raw::Encoder::new();
        for block in input.chunks(BLOCK) {
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            let start = out.len();
            out.resize(start + snap::raw::max_compress_len(block.len()), 0);
            let n = encoder
                .compress(block, &mut out[start..])
                .map_err(|e| failed(Compression::Snappy, e))?;
            out.truncate(start + n);
            out[len_at..start].copy_from_slice(&(n as u32).to_be_bytes());
        }
        Ok(())
    }

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
        if !input.starts_with(XERIAL_MAGIC) {
            let mut out = Vec::new();
            raw_block(input, &mut out, limit)?;
            return Ok(out);
        }
        let mut rest = input
            .get(XERIAL_HEADER.len()..)
            .ok_or_else(|| failed(Compression::Snappy, "truncated xerial header"))?;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = rest
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
                .ok_or_else(|| failed(Compression::Snappy, "truncated block length"))?;
            let block = rest
                .get(4..4 + len)
                .ok_or_else(|| failed(Compression::Snappy, "block runs past the end"))?;
            raw_block(block, &mut out, limit)?;
            rest = &rest[4 + len..];
        }
        Ok(out)
    }

    /// Appends one raw snappy block's contents, checking the size it declares first.
    fn raw_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), BatchError> {
        let len = snap::raw::decompress_len(block).map_err(|e| failed(Compression::Snappy, e))?;
        if out.len().saturating_add(len) > limit {
            return Err(too_large(Compression::Snappy, limit));
        }
        let start = out.len();
        out.resize(start + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|e| failed(Compression::Snappy, e))?;
        out.truncate(start + n);
        Ok(())
    }
}

/// Stand-ins for the codecs whose features are off: a clear error instead of a missing symbol.
macro_rules! disabled_codec {
    ($feature:literal, $name:ident, $codec:ident) => {
        #[cfg(not(feature = $feature))]
        mod $name {
            use super::*;
            pub(super) fn compress(_: &[u8], _: &mut Vec<u8>) -> Result<(), BatchError> {
                Err(BatchError::CodecDisabled(Compression::$codec))
            }
            pub(super) fn decompress(_: &[u8], _: usize) -> Result<Vec<u8>, BatchError> {
                Err(BatchError::CodecDisabled(Compression::$codec))
            }
        }
    };
}
disabled_codec!("gzip", gzip, Gzip);
disabled_codec!("snappy", snappy, Snappy);
disabled_codec!("lz4", lz4, Lz4);
disabled_codec!("zstd", zstd, Zstd);

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_including_multi_block_input() {
        let input: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in ALL {
            let mut out = Vec::new();
            compress(codec, &input, &mut out).unwrap();
            assert_eq!(decompress(codec, &out).unwrap(), input, "{codec:?}");
        }
    }

    #[test]
    fn decompression_stops_at_its_limit() {
        let input = vec![0u8; 1 << 20];
        for codec in ALL.into_iter().filter(|c| *c != Compression::None) {
            let mut out = Vec::new();
            compress(codec, &input, &mut out).unwrap();
            assert_eq!(decompress_within(codec, &out, 1 << 20).unwrap().len(), 1 << 20);
            assert!(
                decompress_within(codec, &out, (1 << 20) - 1).is_err(),
                "{codec:?}: one byte over the limit"
            );
        }
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn raw_snappy_is_read_as_librdkafka_writes_it() {
        let input = b"raw snappy without xerial framing".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw).unwrap(), input);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in ALL.into_iter().skip(1) {
            for garbage in [
                &b""[..],
                b"\x82SNAPPY\x00",
                b"\xff\xff\xff\xff\xff",
                b"\x1f\x8b\x08\x00",
            ] {
                // Empty input may legitimately decode to nothing for some codecs; none may panic.
                let _ = decompress(codec, garbage);
            }
            assert!(
                decompress(codec, b"definitely not compressed data").is_err(),
                "{codec:?}"
            );
        }
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn a_snappy_block_claiming_a_huge_size_is_refused_before_allocating() {
        // A raw block whose length preamble says 2^32 - 1 bytes.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = decompress(Compression::Snappy, &bomb).unwrap_err();
        assert!(matches!(err, BatchError::Decompression { .. }), "{err}");
    }
}
