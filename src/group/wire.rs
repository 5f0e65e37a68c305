//! Kafka's classic big-endian encoding of the group records and protocols (offset-commit keys
//! and values, consumer subscriptions and assignments): a string is an i16 length and bytes,
//! nullable bytes an i32 length (-1 for null), an array an i32 count.

/// The longest string the encoding holds: its length is an i16.
pub(crate) const MAX_STRING_BYTES: usize = i16::MAX as usize;

/// Appends a string. Callers bound its length by [`MAX_STRING_BYTES`]: a longer one would be
/// written with a wrapped length that no reader can parse.
pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends nullable bytes.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// A cursor over encoded fields; every read is `None` past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    pub(crate) fn i8(&mut self) -> Option<i8> {
        Some(self.take(1)?[0] as i8)
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    /// An array count; a count larger than the bytes left could hold is malformed.
    pub(crate) fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }
    pub(crate) fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    pub(crate) fn bytes(&mut self) -> Option<Option<Vec<u8>>> {
        let n = self.i32()?;
        if n < 0 {
            return Some(None);
        }
        Some(Some(self.take(n as usize)?.to_vec()))
    }
    /// True if every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.0.is_empty()
    }
}
