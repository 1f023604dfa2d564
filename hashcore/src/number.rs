//! Numbers as IEEE-754 doubles: correctly rounded parsing, and ECMAScript
//! `Number::toString` output (RFC 8785 §3.2.2.3) via `ryu-js`.

/// 2^53: below it every integer is a double whose shortest form is its digits.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Parses a JSON number literal (already checked against the grammar).
/// Returns `None` if it overflows a double.
pub fn parse_f64(literal: &[u8]) -> Option<f64> {
    // `str::parse::<f64>` is correctly rounded (Eisel-Lemire with a big-decimal fallback).
    let f: f64 = std::str::from_utf8(literal).ok()?.parse().ok()?;
    f.is_finite().then_some(f)
}

/// Appends the ECMAScript string form of `n`; `-0` is written `0`.
pub fn write_f64(out: &mut Vec<u8>, n: f64) {
    if n == 0.0 {
        out.push(b'0');
        return;
    }
    if n.abs() < EXACT_INTEGER_LIMIT {
        // `as` truncates; equality means n is an integer (cheaper than `fract`).
        let i = n as i64;
        if i as f64 == n {
            if i < 0 {
                out.push(b'-');
            }
            write_u64(out, i.unsigned_abs());
            return;
        }
    }
    let mut buf = ryu_js::Buffer::new();
    out.extend_from_slice(buf.format(n).as_bytes());
}

/// Appends the decimal digits of `v`.
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// The ECMAScript string form of `n`.
pub fn to_js_string(n: f64) -> String {
    let mut out = Vec::with_capacity(24);
    write_f64(&mut out, n);
    String::from_utf8_lossy(&out).into_owned()
}
