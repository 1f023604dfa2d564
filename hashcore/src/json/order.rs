//! JCS member order (RFC 8785 §3.2.3) and the duplicate-name check.

use std::cmp::Ordering;

/// Orders two strings by their UTF-16 code units (RFC 8785 §3.2.3).
///
/// UTF-8 byte order is code point order; it differs from UTF-16 order only
/// between U+E000..U+FFFF (lead byte 0xEE/0xEF) and supplementary characters
/// (lead byte >= 0xF0), which UTF-16 encodes as surrogates 0xD800..0xDFFF.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let Some(i) = a.iter().zip(b.iter()).position(|(x, y)| x != y) else {
        return a.len().cmp(&b.len());
    };
    let (x, y) = (a[i], b[i]);
    if x < 0x80 || y < 0x80 {
        return x.cmp(&y);
    }
    let mut start = i;
    while start > 0 && (a[start] & 0xC0) == 0x80 {
        start -= 1;
    }
    let (la, lb) = (a[start], b[start]);
    let high_bmp = |l: u8| l == 0xEE || l == 0xEF;
    if high_bmp(la) && lb >= 0xF0 {
        Ordering::Greater
    } else if la >= 0xF0 && high_bmp(lb) {
        Ordering::Less
    } else {
        x.cmp(&y)
    }
}

/// Something with a member name: a tree member or a written member's span.
pub(super) trait Named {
    fn name(&self) -> &str;
}

/// Sorts members in JCS order. `Ok(true)`: they were in order already (the
/// common case, checked in one pass); `Err(name)`: a name appears twice.
pub(super) fn sort_members<T: Named>(members: &mut [T]) -> Result<bool, String> {
    let mut sorted = true;
    for w in members.windows(2) {
        match cmp_utf16(w[0].name(), w[1].name()) {
            Ordering::Less => {}
            Ordering::Equal => return Err(w[0].name().to_owned()),
            Ordering::Greater => sorted = false,
        }
    }
    if sorted {
        return Ok(true);
    }
    members.sort_unstable_by(|a, b| cmp_utf16(a.name(), b.name()));
    match members.windows(2).find(|w| w[0].name() == w[1].name()) {
        Some(w) => Err(w[0].name().to_owned()),
        None => Ok(false),
    }
}
