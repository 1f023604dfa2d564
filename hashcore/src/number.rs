//! Numbers as IEEE-754 doubles: correctly rounded parsing, and ECMAScript
//! `Number::toString` output (RFC 8785 §3.2.2.3) via `ryu-js`.

/// 2^53: below it every integer is a double whose shortest form is its digits.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Parses a JSON number literal (already checked against the grammar).
/// Returns `None` if it overflows a double.
pub fn parse_f64(literal: &[u8]) -> Option<f64> {
    if let Some(f) = parse_f64_exact(literal) {
        return Some(f);
    }
    // `str::parse::<f64>` is correctly rounded (Eisel-Lemire with a big-decimal fallback).
    let f: f64 = std::str::from_utf8(literal).ok()?.parse().ok()?;
    f.is_finite().then_some(f)
}

/// The double an integer literal (digits only, no sign) denotes, if JCS
/// writes that double with exactly these digits (PROTOCOL §2): then no
/// sender's integer silently changes on the way to a double and back.
pub fn integer_as_written(digits: &[u8]) -> Option<f64> {
    // JCS writes doubles from 1e21 up in exponent form: longer literals never match.
    if digits.len() > 21 {
        return None;
    }
    let f = parse_f64(digits)?;
    let mut buf = ryu_js::Buffer::new();
    (buf.format(f).as_bytes() == digits).then_some(f)
}

/// Powers of ten that are exact doubles.
pub(crate) const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Clinger's fast path: a literal `-?digits[.digits]` (no exponent) whose
/// digits form an integer m <= 2^53 with at most 22 fraction digits is
/// m / 10^k with both operands exact, so one IEEE division rounds correctly.
fn parse_f64_exact(literal: &[u8]) -> Option<f64> {
    let (negative, body) = match literal.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, literal),
    };
    let mut m: u64 = 0;
    let mut frac_digits: Option<usize> = None;
    for &c in body {
        match c {
            b'0'..=b'9' => {
                m = m.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                if let Some(k) = frac_digits.as_mut() {
                    *k += 1;
                }
            }
            b'.' if frac_digits.is_none() => frac_digits = Some(0),
            _ => return None,
        }
    }
    if m > 1 << 53 {
        return None;
    }
    let k = frac_digits.unwrap_or(0);
    let f = m as f64 / *POW10.get(k)?;
    Some(if negative { -f } else { f })
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
