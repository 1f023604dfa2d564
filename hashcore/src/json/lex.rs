//! Reading the tokens of a JSON text: whitespace, literals, strings, numbers,
//! and the errors they raise (PROTOCOL §2).

use super::{JStr, MAX_DEPTH, MAX_SAFE_INTEGER};
use crate::error::{JsonError, Rule};
use crate::number;

// Errors are boxed so that results stay small on the hot path.
pub(super) type PResult<T> = Result<T, Box<JsonError>>;

// Bytes that end the fast scan of a string: '"', '\\' and controls; they
// are also the bytes that JCS escapes.
pub(super) static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Index of the first byte at or after `i` that is '"', '\\' or a control.
#[inline]
pub(super) fn scan_string(s: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Eight bytes at a time: the lowest flagged byte of each test is exact.
    while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
        let hits = zero(w ^ (LO * u64::from(b'"')))
            | zero(w ^ (LO * u64::from(b'\\')))
            | (w.wrapping_sub(LO * 0x20) & !w & HI);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < s.len() && !STRING_STOP[s[i] as usize] {
        i += 1;
    }
    i
}

pub(super) struct Lexer<'a> {
    pub(super) s: &'a [u8],
    /// The whole input, if it is valid UTF-8.
    text: Option<&'a str>,
    pub(super) pos: usize,
    /// Apply the integer rule of PROTOCOL §2 (ingest), else read every
    /// integer literal as a double (the auditor, §6).
    integer_range: bool,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(s: &'a [u8], integer_range: bool) -> Self {
        Lexer {
            s,
            // Validating the whole text once is much cheaper than string by
            // string; if it fails, strings are validated one by one to find the path.
            text: std::str::from_utf8(s).ok(),
            pos: 0,
            integer_range,
        }
    }

    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    #[inline]
    pub(super) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[cold]
    pub(super) fn err(&self, rule: Rule, msg: impl Into<String>) -> Box<JsonError> {
        Box::new(JsonError::new(rule, self.pos, msg))
    }

    /// A syntax error at `pos`, or a `utf8` error if the bytes there are not UTF-8.
    #[cold]
    pub(super) fn unexpected(&self, wanted: &str) -> Box<JsonError> {
        match self.peek() {
            None => self.err(
                Rule::Malformed,
                format!("unexpected end of input, expected {wanted}"),
            ),
            Some(b) if b >= 0x80 => {
                let end = (self.pos + 4).min(self.s.len());
                match std::str::from_utf8(&self.s[self.pos..end]) {
                    Err(e) if e.valid_up_to() == 0 => self.err(Rule::Utf8, "invalid UTF-8"),
                    _ => self.err(
                        Rule::Malformed,
                        format!("unexpected character, expected {wanted}"),
                    ),
                }
            }
            Some(b) => self.err(
                Rule::Malformed,
                format!("unexpected {:?}, expected {wanted}", char::from(b)),
            ),
        }
    }

    /// Checks the nesting limit before a container at `depth`.
    #[inline]
    pub(super) fn enter(&self, depth: usize) -> PResult<()> {
        if depth > MAX_DEPTH {
            Err(self.err(
                Rule::Depth,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ))
        } else {
            Ok(())
        }
    }

    /// Reads `true`, `false` or `null`.
    pub(super) fn word(&mut self, word: &'static [u8]) -> PResult<()> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err(Rule::Malformed, "invalid literal"))
        }
    }

    /// Reads a string; `pos` is at the opening quote.
    #[inline]
    pub(super) fn string(&mut self) -> PResult<JStr<'a>> {
        let start = self.pos + 1;
        let i = scan_string(self.s, start);
        match self.s.get(i) {
            Some(b'"') => {
                let text = self.utf8(start, i)?;
                self.pos = i + 1;
                Ok(JStr::Plain(text))
            }
            Some(b'\\') => {
                let mut buf = String::with_capacity(i - start + 16);
                buf.push_str(self.utf8(start, i)?);
                self.pos = i;
                self.string_slow(buf)
            }
            Some(_) => {
                self.pos = i;
                Err(self.err(Rule::Malformed, "control character in string"))
            }
            None => {
                self.pos = i;
                Err(self.err(Rule::Malformed, "unterminated string"))
            }
        }
    }

    /// The text of `s[start..end]`; both ends are next to ASCII delimiters.
    #[inline]
    pub(super) fn utf8(&self, start: usize, end: usize) -> PResult<&'a str> {
        if let Some(text) = self.text {
            return text
                .get(start..end)
                .ok_or_else(|| Box::new(JsonError::new(Rule::Utf8, start, "invalid UTF-8")));
        }
        std::str::from_utf8(&self.s[start..end]).map_err(|e| {
            Box::new(JsonError::new(
                Rule::Utf8,
                start + e.valid_up_to(),
                "invalid UTF-8",
            ))
        })
    }

    /// Continues a string that has escapes; `pos` is at a backslash.
    fn string_slow(&mut self, mut buf: String) -> PResult<JStr<'a>> {
        let s = self.s;
        loop {
            match s.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(JStr::Owned(buf));
                }
                Some(b'\\') => {
                    let esc = s.get(self.pos + 1).copied();
                    self.pos += 2;
                    let c = match esc {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => {
                            self.pos -= 1;
                            return Err(self.err(Rule::Malformed, "invalid escape"));
                        }
                    };
                    buf.push(c);
                }
                Some(&b) if b < 0x20 => {
                    return Err(self.err(Rule::Malformed, "control character in string"));
                }
                Some(_) => {
                    let start = self.pos;
                    let i = scan_string(s, start);
                    buf.push_str(self.utf8(start, i)?);
                    self.pos = i;
                }
                None => return Err(self.err(Rule::Malformed, "unterminated string")),
            }
        }
    }

    fn hex4(&mut self) -> PResult<u32> {
        let Some(digits) = self.s.get(self.pos..self.pos + 4) else {
            return Err(self.err(Rule::Malformed, "truncated \\u escape"));
        };
        let mut v = 0u32;
        for &d in digits {
            let Some(n) = char::from(d).to_digit(16) else {
                return Err(self.err(Rule::Malformed, "invalid \\u escape"));
            };
            v = v * 16 + n;
        }
        self.pos += 4;
        Ok(v)
    }

    /// After `\u`: one code point, pairing surrogates.
    fn unicode_escape(&mut self) -> PResult<char> {
        let at = self.pos - 2;
        let lone = || {
            Box::new(JsonError::new(
                Rule::LoneSurrogate,
                at,
                "lone surrogate escape",
            ))
        };
        let hi = self.hex4()?;
        let cp = match hi {
            0xD800..=0xDBFF => {
                if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(lone());
                }
                self.pos += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(lone());
                }
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(lone()),
            _ => hi,
        };
        char::from_u32(cp).ok_or_else(lone)
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Reads a number as a double.
    pub(super) fn number(&mut self) -> PResult<f64> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.unexpected("a digit")),
        }
        let int_end = self.pos;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if self.digits() == 0 {
                return Err(self.unexpected("a digit"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.unexpected("a digit"));
            }
        }
        if integer && (self.integer_range || int_end - int_start <= 16) {
            let digits = &self.s[int_start..int_end];
            let magnitude = if digits.len() <= 16 {
                let v = digits
                    .iter()
                    .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
                // Exact below 2^53; above it (auditor mode) u64 -> f64 rounds to nearest.
                (v <= MAX_SAFE_INTEGER || !self.integer_range).then_some(v as f64)
            } else {
                None
            };
            // Above 2^53-1 only the digits JCS writes for a double are kept (§2).
            let magnitude = magnitude
                .or_else(|| number::integer_as_written(digits))
                .ok_or_else(|| {
                    Box::new(JsonError::new(
                        Rule::IntegerRange,
                        start,
                        "integer literal beyond 2^53-1 that is not how JCS writes a double",
                    ))
                })?;
            return Ok(if negative { -magnitude } else { magnitude });
        }
        number::parse_f64(&self.s[start..self.pos]).ok_or_else(|| {
            Box::new(JsonError::new(
                Rule::NumberOverflow,
                start,
                "number overflows a double",
            ))
        })
    }
}
