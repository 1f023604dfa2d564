//! JCS (RFC 8785) output: the streaming sink that writes a JSON text's
//! canonical form as it is read, and the writer of parsed values.

use super::grammar::Sink;
use super::lex::{scan_string, Lexer, PResult, STRING_STOP};
use super::order::{sort_members, Named};
use super::{JStr, Member, Value};
use crate::number;

/// A member written to `out`: its name and the span of `"name":value`.
struct Span<'a> {
    name: JStr<'a>,
    start: usize,
    end: usize,
}

impl Named for Span<'_> {
    #[inline]
    fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// Writes values in JCS form as they are read. Members are written as they
/// come; if their names are out of order, the object's body is reordered
/// at its end.
pub(super) struct Canonical<'a> {
    pub(super) out: Vec<u8>,
    spans: Vec<Span<'a>>,
    reorder: Vec<u8>,
}

impl Canonical<'_> {
    pub(super) fn new(out: Vec<u8>) -> Self {
        Canonical {
            out,
            spans: Vec::new(),
            reorder: Vec::new(),
        }
    }
}

impl<'a> Sink<'a> for Canonical<'a> {
    /// A string without escapes is already in JCS form: copied as is.
    #[inline]
    fn string(&mut self, lx: &mut Lexer<'a>) -> PResult<()> {
        let start = lx.pos + 1;
        let i = scan_string(lx.s, start);
        if lx.s.get(i) == Some(&b'"') {
            lx.utf8(start, i)?;
            self.out.extend_from_slice(&lx.s[lx.pos..=i]);
            lx.pos = i + 1;
            return Ok(());
        }
        let s = lx.string()?;
        write_jstr(&mut self.out, &s);
        Ok(())
    }

    /// A literal in plain notation with at most 15 significant digits, no
    /// trailing fraction zeros and a magnitude in ECMAScript's plain range is
    /// copied verbatim: any decimal of <= 15 significant digits is the unique
    /// shortest decimal that rounds to its double (DBL_DIG = 15), which is
    /// what `Number::toString` writes, in that same notation. Other plain
    /// fractions are read in the same pass when Clinger's fast path applies;
    /// everything else goes through `Lexer::number`.
    #[inline]
    fn number(&mut self, lx: &mut Lexer<'a>) -> PResult<()> {
        let start = lx.pos;
        let s = lx.s;
        let negative = s.get(start) == Some(&b'-');
        let int_start = start + usize::from(negative);
        let mut i = int_start;
        // Up to 19 digits fit a u64; `m` takes all of them.
        let mut m: u64 = 0;
        while let Some(&d @ b'0'..=b'9') = s.get(i) {
            m = m.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            i += 1;
        }
        let int_len = i - int_start;
        if int_len == 0
            || (int_len > 1 && s[int_start] == b'0')
            || s.get(i) != Some(&b'.')
            || int_len > 15
        {
            // Integers, exponents, long or malformed literals.
            if (1..=15).contains(&int_len)
                && (int_len == 1 || s[int_start] != b'0')
                && !matches!(s.get(i), Some(b'e' | b'E' | b'.'))
                && !(negative && m == 0)
            {
                self.out.extend_from_slice(&s[start..i]);
                lx.pos = i;
                return Ok(());
            }
            return self.number_slow(lx);
        }
        let frac_start = i + 1;
        let mut j = frac_start;
        while let Some(&d @ b'0'..=b'9') = s.get(j) {
            m = m.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            j += 1;
        }
        let frac = &s[frac_start..j];
        if frac.is_empty() || matches!(s.get(j), Some(b'e' | b'E')) {
            return self.number_slow(lx);
        }
        let int_zero = s[int_start] == b'0';
        // Significant digits: leading zeros of `0.000d` do not count.
        let lead = if int_zero {
            frac.iter().take_while(|&&d| d == b'0').count()
        } else {
            0
        };
        let sig = if int_zero {
            frac.len() - lead
        } else {
            int_len + frac.len()
        };
        if frac.last() != Some(&b'0') && sig <= 15 && lead <= 5 {
            self.out.extend_from_slice(&s[start..j]);
            lx.pos = j;
            return Ok(());
        }
        // `sig <= 19` means `m` did not wrap (leading zeros add nothing).
        if sig <= 19 && m <= 1 << 53 && frac.len() < number::POW10.len() {
            let f = m as f64 / number::POW10[frac.len()];
            lx.pos = j;
            number::write_f64(&mut self.out, if negative { -f } else { f });
            return Ok(());
        }
        self.number_slow(lx)
    }

    #[inline]
    fn boolean(&mut self, b: bool) {
        self.out
            .extend_from_slice(if b { b"true".as_slice() } else { b"false" });
    }

    #[inline]
    fn null(&mut self) {
        self.out.extend_from_slice(b"null");
    }

    #[inline]
    fn array_start(&mut self) -> usize {
        self.out.push(b'[');
        0
    }

    #[inline]
    fn array_comma(&mut self) {
        self.out.push(b',');
    }

    #[inline]
    fn array_end(&mut self, _mark: usize) {
        self.out.push(b']');
    }

    #[inline]
    fn object_start(&mut self) -> (usize, usize) {
        self.out.push(b'{');
        (self.spans.len(), self.out.len())
    }

    #[inline]
    fn member_start(&mut self, name: &JStr<'a>, first: bool) -> usize {
        if !first {
            self.out.push(b',');
        }
        let start = self.out.len();
        write_jstr(&mut self.out, name);
        self.out.push(b':');
        start
    }

    #[inline]
    fn member_end(&mut self, name: JStr<'a>, start: usize) {
        let end = self.out.len();
        self.spans.push(Span { name, start, end });
    }

    fn object_end(&mut self, (base, body): (usize, usize)) -> Result<(), String> {
        let spans = &mut self.spans[base..];
        if !sort_members(spans)? {
            self.reorder.clear();
            self.reorder.extend_from_slice(&self.out[body..]);
            self.out.truncate(body);
            for (i, span) in spans.iter().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                self.out
                    .extend_from_slice(&self.reorder[span.start - body..span.end - body]);
            }
        }
        self.spans.truncate(base);
        self.out.push(b'}');
        Ok(())
    }
}

impl<'a> Canonical<'a> {
    #[inline(never)]
    fn number_slow(&mut self, lx: &mut Lexer<'a>) -> PResult<()> {
        let n = lx.number()?;
        number::write_f64(&mut self.out, n);
        Ok(())
    }
}

/// Appends the JCS form of `v`.
pub fn write_value(out: &mut Vec<u8>, v: &Value<'_>) {
    write_value_in(out, v, &[]);
}

/// Appends the JCS form of `v`; `Value::CanonAt` spans refer to `canon`.
pub fn write_value_in(out: &mut Vec<u8>, v: &Value<'_>, canon: &[u8]) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => number::write_f64(out, *n),
        Value::Str(s) => write_jstr(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value_in(out, item, canon);
            }
            out.push(b']');
        }
        Value::Object(members) => write_members_in(out, members, canon),
        Value::CanonAt { start, end, .. } => {
            out.extend_from_slice(canon.get(*start..*end).unwrap_or_default())
        }
    }
}

/// Appends `{...}` with the given (already sorted) members.
pub fn write_members(out: &mut Vec<u8>, members: &[Member<'_>]) {
    write_members_in(out, members, &[]);
}

/// `write_members` where `Value::CanonAt` spans refer to `canon`.
pub fn write_members_in(out: &mut Vec<u8>, members: &[Member<'_>], canon: &[u8]) {
    out.push(b'{');
    write_members_tail(out, members, canon);
}

/// Appends the members and the closing brace, without the opening brace.
pub fn write_members_tail(out: &mut Vec<u8>, members: &[Member<'_>], canon: &[u8]) {
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_member(out, k, v, canon);
    }
    out.push(b'}');
}

/// Appends `"name":value`.
#[inline]
pub fn write_member(out: &mut Vec<u8>, name: &JStr<'_>, v: &Value<'_>, canon: &[u8]) {
    write_jstr(out, name);
    out.push(b':');
    write_value_in(out, v, canon);
}

#[inline]
pub fn write_jstr(out: &mut Vec<u8>, s: &JStr<'_>) {
    match s {
        JStr::Plain(p) => {
            out.reserve(p.len() + 2);
            out.push(b'"');
            out.extend_from_slice(p.as_bytes());
            out.push(b'"');
        }
        JStr::Owned(o) => write_escaped_str(out, o),
    }
}

/// Appends `s` as a JSON string escaped per RFC 8785 §3.2.2.2.
pub fn write_escaped_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !STRING_STOP[b as usize] {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}
