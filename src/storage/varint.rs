//! Zig-zag variable-length integers as Kafka's record format uses them (protobuf's encoding):
//! seven bits a byte, least significant group first, high bit set on all but the last byte.

/// Appends `v` zig-zag encoded.
#[inline]
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends `v` zig-zag encoded.
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, v as i64)
}

/// The encoded size of `v`.
#[inline]
pub(crate) fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    // One byte per started group of seven bits, and at least one byte.
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// The encoded size of `v`.
#[inline]
pub(crate) fn varint_len(v: i32) -> usize {
    varlong_len(v as i64)
}

/// Decodes a zig-zag varlong at the start of `buf`: the value and the bytes it took, or `None`
/// if `buf` ends first or the encoding is longer than 10 bytes.
#[inline]
pub(crate) fn get_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    // Fast path: most lengths and deltas fit in one byte.
    if let Some(&b) = buf.first()
        && b < 0x80
    {
        let z = b as u64;
        return Some((((z >> 1) as i64) ^ -((z & 1) as i64), 1));
    }
    let mut z: u64 = 0;
    for (i, &b) in buf.iter().take(10).enumerate() {
        z |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Some((((z >> 1) as i64) ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

/// Decodes a zig-zag varint; values outside `i32` are refused like a truncated encoding.
#[inline]
pub(crate) fn get_varint(buf: &[u8]) -> Option<(i32, usize)> {
    // Fast path: lengths, deltas and counts below 64 (in magnitude) take one byte.
    if let Some(&b) = buf.first()
        && b < 0x80
    {
        return Some((((b >> 1) as i32) ^ -((b & 1) as i32), 1));
    }
    let (v, n) = get_varlong(buf)?;
    if n > 5 {
        return None;
    }
    Some((i32::try_from(v).ok()?, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // Values from the protobuf documentation of zig-zag encoding.
        for (v, bytes) in [
            (0i64, &[0x00u8][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (i32::MAX as i64, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN as i64, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varlong_len(v), bytes.len(), "{v}");
            assert_eq!(get_varlong(bytes), Some((v, bytes.len())));
        }
    }

    #[test]
    fn truncated_and_overlong_encodings_are_refused() {
        assert_eq!(get_varlong(&[]), None);
        assert_eq!(get_varlong(&[0x80]), None);
        assert_eq!(get_varlong(&[0xff; 11]), None);
        // A varlong that does not fit an i32 is not a varint.
        let mut out = Vec::new();
        put_varlong(&mut out, i64::from(i32::MAX) + 1);
        assert_eq!(get_varint(&out), None);
    }

    proptest! {
        #[test]
        fn round_trip(v: i64) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            prop_assert_eq!(get_varlong(&out), Some((v, out.len())));
        }
    }
}
