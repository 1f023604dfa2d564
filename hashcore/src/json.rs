//! I-JSON parser (PROTOCOL §2) and RFC 8785 (JCS) serializer.
//!
//! Hand-written because no crate reports duplicate keys at any depth, lone
//! surrogates, integer-literal range and depth with a path. Strings without
//! escapes are borrowed from the input and written back without a rescan.

use std::cmp::Ordering;

use crate::error::{JsonError, Rule, Segment};
use crate::number;

/// Deepest nesting allowed; the root array/object is depth 1.
pub const MAX_DEPTH: usize = 64;
/// Largest integer literal allowed (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A JSON string: `Plain` is taken verbatim from a JSON text and holds no
/// character that JCS escapes; `Owned` may hold any character.
#[derive(Debug, Clone, PartialEq)]
pub enum JStr<'a> {
    Plain(&'a str),
    Owned(String),
}

impl JStr<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            JStr::Plain(s) => s,
            JStr::Owned(s) => s,
        }
    }
}

/// A parsed JSON value. Object members are sorted in JCS order (UTF-16 code
/// units of the names) and their names are unique.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(f64),
    Str(JStr<'a>),
    Array(Vec<Value<'a>>),
    Object(Vec<(JStr<'a>, Value<'a>)>),
    /// An array or object below the parser's structural depth, already in
    /// JCS form (see `parse_with`): checked and serialized, not a tree.
    Canon(Vec<u8>),
    /// Like `Canon`, but the JCS bytes are `buf[start..end]` of the buffer
    /// returned by `parse_shared` (one buffer for all of them, no allocation
    /// per container). `object`: the bytes are an object, else an array.
    CanonAt {
        start: usize,
        end: usize,
        object: bool,
    },
}

impl<'a> Value<'a> {
    pub fn as_object(&self) -> Option<&[(JStr<'a>, Value<'a>)]> {
        match self {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// An object, as a tree or in JCS form.
    pub fn is_object(&self) -> bool {
        match self {
            Value::Object(_) => true,
            Value::Canon(b) => b.first() == Some(&b'{'),
            Value::CanonAt { object, .. } => *object,
            _ => false,
        }
    }

    /// A short name of the JSON type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Canon(b) if b.first() == Some(&b'{') => "object",
            Value::Canon(_) => "array",
            Value::CanonAt { object: true, .. } => "object",
            Value::CanonAt { .. } => "array",
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

/// Looks a member up in a sorted object.
pub fn get<'v, 'a>(members: &'v [(JStr<'a>, Value<'a>)], name: &str) -> Option<&'v Value<'a>> {
    members
        .binary_search_by(|(k, _)| cmp_utf16(k.as_str(), name))
        .ok()
        .map(|i| &members[i].1)
}

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

/// Parses one JSON text under the rules of PROTOCOL §2 into a full tree.
pub fn parse(input: &[u8]) -> Result<Value<'_>, JsonError> {
    parse_with(input, true, usize::MAX)
}

/// Parses one JSON text as an auditor reads JCS output (PROTOCOL §6): every
/// number is a double, so an integer literal above 2^53-1 (which JCS writes
/// for large doubles, e.g. `374956584419848800`) is accepted and rounded.
pub fn parse_doubles(input: &[u8]) -> Result<Value<'_>, JsonError> {
    parse_with(input, false, usize::MAX)
}

/// Parses one JSON text; arrays and objects at depth >= `canon_depth` (the
/// root container is depth 1) are checked under the same rules but kept as
/// `Value::Canon` JCS bytes instead of trees, which is much cheaper when
/// only their serialization is needed. `integer_range`: reject integer
/// literals above 2^53-1 (PROTOCOL §2), else read them as doubles (§6).
pub fn parse_with(
    input: &[u8],
    integer_range: bool,
    canon_depth: usize,
) -> Result<Value<'_>, JsonError> {
    let mut p = Parser::new(input, integer_range, canon_depth);
    p.document().map_err(|e| finish_error(*e))
}

/// Like `parse_with`, but containers at depth >= `canon_depth` become
/// `Value::CanonAt` spans of the returned buffer instead of `Value::Canon`.
pub fn parse_shared(
    input: &[u8],
    integer_range: bool,
    canon_depth: usize,
) -> Result<(Value<'_>, Vec<u8>), JsonError> {
    let mut p = Parser::new(input, integer_range, canon_depth);
    p.shared = true;
    p.out.reserve(input.len());
    let v = p.document().map_err(|e| finish_error(*e))?;
    Ok((v, p.out))
}

/// JSON text -> RFC 8785 bytes.
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, JsonError> {
    let mut p = Parser::new(input, true, 1);
    p.canonical_document().map_err(|e| finish_error(*e))
}

fn finish_error(mut e: JsonError) -> JsonError {
    // Segments were pushed leaf first while unwinding.
    e.segments.reverse();
    e
}

// Errors are boxed inside the parser so that results stay small on the hot path.
type PResult<T> = Result<T, Box<JsonError>>;
type Member<'a> = (JStr<'a>, Value<'a>);

// Bytes that end the fast scan of a string: '"', '\\' and controls.
static STRING_STOP: [bool; 256] = {
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
fn scan_string(s: &[u8], mut i: usize) -> usize {
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

struct Parser<'a> {
    s: &'a [u8],
    /// The whole input, if it is valid UTF-8.
    text: Option<&'a str>,
    pos: usize,
    /// Reject integer literals above 2^53-1 (PROTOCOL §2).
    integer_range: bool,
    /// Scratch stacks: values (and member names) are pushed here; a
    /// container moves its children to a Vec of the exact size.
    keys: Vec<JStr<'a>>,
    items: Vec<Value<'a>>,
    /// Containers at this depth or deeper are written to `out` in JCS form.
    canon_depth: usize,
    out: Vec<u8>,
    /// Members of the objects being written: name, and the span of
    /// `"name":value` in `out`.
    spans: Vec<(JStr<'a>, usize, usize)>,
    reorder: Vec<u8>,
    /// Keep every canonical container in `out` (`Value::CanonAt`).
    shared: bool,
}

impl<'a> Parser<'a> {
    fn new(s: &'a [u8], integer_range: bool, canon_depth: usize) -> Self {
        Parser {
            s,
            // Validating the whole text once is much cheaper than string by
            // string; if it fails, strings are validated one by one to find the path.
            text: std::str::from_utf8(s).ok(),
            pos: 0,
            integer_range,
            keys: Vec::with_capacity(32),
            items: Vec::with_capacity(64),
            canon_depth,
            out: Vec::new(),
            spans: Vec::new(),
            reorder: Vec::new(),
            shared: false,
        }
    }

    fn canonical_document(&mut self) -> PResult<Vec<u8>> {
        self.out.reserve(self.s.len());
        self.skip_ws();
        self.emit(0)?;
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(self.unexpected("end of input"));
        }
        Ok(std::mem::take(&mut self.out))
    }

    fn document(&mut self) -> PResult<Value<'a>> {
        self.skip_ws();
        self.value(0)?;
        self.skip_ws();
        if self.pos != self.s.len() {
            return Err(self.unexpected("end of input"));
        }
        Ok(self.items.pop().unwrap_or(Value::Null))
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[cold]
    fn err(&self, rule: Rule, msg: impl Into<String>) -> Box<JsonError> {
        Box::new(JsonError::new(rule, self.pos, msg))
    }

    /// A syntax error at `pos`, or a `utf8` error if the bytes there are not UTF-8.
    #[cold]
    fn unexpected(&self, wanted: &str) -> Box<JsonError> {
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

    /// Parses a value and pushes it on `items`: children are built in place,
    /// so no large value travels through return slots.
    fn value(&mut self, depth: usize) -> PResult<()> {
        let v = match self.peek() {
            Some(b'"') => Value::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            Some(c @ (b'{' | b'[')) if depth + 1 >= self.canon_depth && self.shared => {
                let start = self.out.len();
                self.emit(depth)?;
                Value::CanonAt {
                    start,
                    end: self.out.len(),
                    object: c == b'{',
                }
            }
            Some(b'{' | b'[') if depth + 1 >= self.canon_depth => {
                self.out.clear();
                self.emit(depth)?;
                Value::Canon(self.out.as_slice().to_vec())
            }
            Some(b'{') => return self.object(depth + 1),
            Some(b'[') => return self.array(depth + 1),
            Some(b't') => self.literal(b"true", Value::Bool(true))?,
            Some(b'f') => self.literal(b"false", Value::Bool(false))?,
            Some(b'n') => self.literal(b"null", Value::Null)?,
            _ => return Err(self.unexpected("a value")),
        };
        self.items.push(v);
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8], v: Value<'a>) -> PResult<Value<'a>> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err(Rule::Malformed, "invalid literal"))
        }
    }

    #[inline]
    fn enter(&self, depth: usize) -> PResult<()> {
        if depth > MAX_DEPTH {
            Err(self.err(
                Rule::Depth,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ))
        } else {
            Ok(())
        }
    }

    fn array(&mut self, depth: usize) -> PResult<()> {
        self.enter(depth)?;
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.items.push(Value::Array(Vec::new()));
            return Ok(());
        }
        let base = self.items.len();
        loop {
            let index = self.items.len() - base;
            self.value(depth).map_err(|mut e| {
                e.segments.push(Segment::Index(index));
                e
            })?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    let items = self.items.drain(base..).collect();
                    self.items.push(Value::Array(items));
                    return Ok(());
                }
                _ => {
                    let mut e = self.unexpected("',' or ']'");
                    e.segments.push(Segment::Index(index));
                    return Err(e);
                }
            }
        }
    }

    fn object(&mut self, depth: usize) -> PResult<()> {
        self.enter(depth)?;
        let open = self.pos;
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.items.push(Value::Object(Vec::new()));
            return Ok(());
        }
        let (key_base, base) = (self.keys.len(), self.items.len());
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a member name"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                let mut e = self.unexpected("':'");
                e.segments.push(Segment::Key(key.as_str().to_owned()));
                return Err(e);
            }
            self.pos += 1;
            self.skip_ws();
            if let Err(mut e) = self.value(depth) {
                e.segments.push(Segment::Key(key.as_str().to_owned()));
                return Err(e);
            }
            self.keys.push(key);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
        let mut members: Vec<Member<'a>> = Vec::with_capacity(self.keys.len() - key_base);
        members.extend(self.keys.drain(key_base..).zip(self.items.drain(base..)));
        sort_members(&mut members).map_err(|dup| {
            let mut e = JsonError::new(
                Rule::DuplicateKey,
                open,
                format!("member name {dup:?} appears twice"),
            );
            e.segments.push(Segment::Key(dup));
            Box::new(e)
        })?;
        self.items.push(Value::Object(members));
        Ok(())
    }

    /// Parses a value and appends its JCS form to `out`.
    fn emit(&mut self, depth: usize) -> PResult<()> {
        match self.peek() {
            Some(b'"') => self.emit_string()?,
            Some(b'-' | b'0'..=b'9') => self.emit_number()?,
            Some(b'{') => return self.emit_object(depth + 1),
            Some(b'[') => return self.emit_array(depth + 1),
            Some(b't') => self.emit_word(b"true")?,
            Some(b'f') => self.emit_word(b"false")?,
            Some(b'n') => self.emit_word(b"null")?,
            _ => return Err(self.unexpected("a value")),
        }
        Ok(())
    }

    fn emit_word(&mut self, word: &'static [u8]) -> PResult<()> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            self.out.extend_from_slice(word);
            Ok(())
        } else {
            Err(self.err(Rule::Malformed, "invalid literal"))
        }
    }

    fn emit_array(&mut self, depth: usize) -> PResult<()> {
        self.enter(depth)?;
        self.pos += 1;
        self.out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.out.push(b']');
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.emit(depth).map_err(|mut e| {
                e.segments.push(Segment::Index(index));
                e
            })?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.out.push(b',');
                    self.skip_ws();
                    index += 1;
                }
                Some(b']') => {
                    self.pos += 1;
                    self.out.push(b']');
                    return Ok(());
                }
                _ => {
                    let mut e = self.unexpected("',' or ']'");
                    e.segments.push(Segment::Index(index));
                    return Err(e);
                }
            }
        }
    }

    /// Writes members as they come; if their names are out of JCS order,
    /// moves the written members into order at the end.
    fn emit_object(&mut self, depth: usize) -> PResult<()> {
        self.enter(depth)?;
        let open = self.pos;
        self.pos += 1;
        self.out.push(b'{');
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.out.push(b'}');
            return Ok(());
        }
        let base = self.spans.len();
        let body = self.out.len();
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("a member name"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                let mut e = self.unexpected("':'");
                e.segments.push(Segment::Key(key.as_str().to_owned()));
                return Err(e);
            }
            self.pos += 1;
            self.skip_ws();
            if self.spans.len() > base {
                self.out.push(b',');
            }
            let start = self.out.len();
            write_jstr(&mut self.out, &key);
            self.out.push(b':');
            if let Err(mut e) = self.emit(depth) {
                e.segments.push(Segment::Key(key.as_str().to_owned()));
                return Err(e);
            }
            self.spans.push((key, start, self.out.len()));
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
        let spans = &mut self.spans[base..];
        let mut sorted = true;
        let mut dup = None;
        for w in spans.windows(2) {
            match cmp_utf16(w[0].0.as_str(), w[1].0.as_str()) {
                Ordering::Less => {}
                Ordering::Equal => dup = Some(w[0].0.as_str().to_owned()),
                Ordering::Greater => sorted = false,
            }
            if dup.is_some() {
                break;
            }
        }
        if dup.is_none() && !sorted {
            spans.sort_unstable_by(|a, b| cmp_utf16(a.0.as_str(), b.0.as_str()));
            dup = spans
                .windows(2)
                .find(|w| w[0].0.as_str() == w[1].0.as_str())
                .map(|w| w[0].0.as_str().to_owned());
            if dup.is_none() {
                self.reorder.clear();
                self.reorder.extend_from_slice(&self.out[body..]);
                self.out.truncate(body);
                for (i, (_, start, end)) in spans.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.out
                        .extend_from_slice(&self.reorder[start - body..end - body]);
                }
            }
        }
        if let Some(dup) = dup {
            let mut e = JsonError::new(
                Rule::DuplicateKey,
                open,
                format!("member name {dup:?} appears twice"),
            );
            e.segments.push(Segment::Key(dup));
            return Err(Box::new(e));
        }
        self.spans.truncate(base);
        self.out.push(b'}');
        Ok(())
    }

    /// Parses a string and appends its JCS form; `pos` is at the opening quote.
    #[inline]
    fn emit_string(&mut self) -> PResult<()> {
        let start = self.pos + 1;
        let i = scan_string(self.s, start);
        if self.s.get(i) == Some(&b'"') {
            self.utf8(start, i)?;
            // No escapes: the quoted text is already in JCS form.
            self.out.extend_from_slice(&self.s[self.pos..=i]);
            self.pos = i + 1;
            return Ok(());
        }
        let s = self.string()?;
        write_jstr(&mut self.out, &s);
        Ok(())
    }

    /// Parses a number and appends its JCS form.
    ///
    /// A literal in plain notation with at most 15 significant digits, no
    /// trailing fraction zeros and a magnitude in ECMAScript's plain range is
    /// copied verbatim: any decimal of <= 15 significant digits is the unique
    /// shortest decimal that rounds to its double (DBL_DIG = 15), which is
    /// what `Number::toString` writes, in that same notation. Other plain
    /// fractions are read in the same pass when Clinger's fast path applies;
    /// everything else goes through `number`.
    #[inline]
    fn emit_number(&mut self) -> PResult<()> {
        let start = self.pos;
        let s = self.s;
        let negative = s.get(start) == Some(&b'-');
        let int_start = start + usize::from(negative);
        let mut i = int_start;
        // Up to 19 digits fit a u64; `ndigits` counts all of them.
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
                self.pos = i;
                return Ok(());
            }
            return self.emit_number_slow();
        }
        let frac_start = i + 1;
        let mut j = frac_start;
        while let Some(&d @ b'0'..=b'9') = s.get(j) {
            m = m.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            j += 1;
        }
        let frac = &s[frac_start..j];
        if frac.is_empty() || matches!(s.get(j), Some(b'e' | b'E')) {
            return self.emit_number_slow();
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
            self.pos = j;
            return Ok(());
        }
        // `sig <= 19` means `m` did not wrap (leading zeros add nothing).
        if sig <= 19 && m <= 1 << 53 && frac.len() < number::POW10.len() {
            let f = m as f64 / number::POW10[frac.len()];
            self.pos = j;
            number::write_f64(&mut self.out, if negative { -f } else { f });
            return Ok(());
        }
        self.emit_number_slow()
    }

    #[inline(never)]
    fn emit_number_slow(&mut self) -> PResult<()> {
        let n = self.number()?;
        number::write_f64(&mut self.out, n);
        Ok(())
    }

    /// Parses a string; `pos` is at the opening quote.
    #[inline]
    fn string(&mut self) -> PResult<JStr<'a>> {
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
    fn utf8(&self, start: usize, end: usize) -> PResult<&'a str> {
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

    fn number(&mut self) -> PResult<f64> {
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
        let range_error = || {
            Box::new(JsonError::new(
                Rule::IntegerRange,
                start,
                "integer literal beyond 2^53-1",
            ))
        };
        if integer && (self.integer_range || int_end - int_start <= 16) {
            let digits = &self.s[int_start..int_end];
            if digits.len() > 16 {
                return Err(range_error());
            }
            let v = digits
                .iter()
                .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
            if v > MAX_SAFE_INTEGER && self.integer_range {
                return Err(range_error());
            }
            // Exact below 2^53; above it (auditor mode) u64 -> f64 rounds to nearest.
            let f = v as f64;
            return Ok(if negative { -f } else { f });
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

/// Sorts members in JCS order; returns the name of a duplicate if any.
fn sort_members(members: &mut [(JStr<'_>, Value<'_>)]) -> Result<(), String> {
    let mut sorted = true;
    for w in members.windows(2) {
        match cmp_utf16(w[0].0.as_str(), w[1].0.as_str()) {
            Ordering::Less => {}
            Ordering::Equal => return Err(w[0].0.as_str().to_owned()),
            Ordering::Greater => sorted = false,
        }
    }
    if sorted {
        return Ok(());
    }
    members.sort_unstable_by(|a, b| cmp_utf16(a.0.as_str(), b.0.as_str()));
    for w in members.windows(2) {
        if w[0].0.as_str() == w[1].0.as_str() {
            return Err(w[0].0.as_str().to_owned());
        }
    }
    Ok(())
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
        Value::Canon(bytes) => out.extend_from_slice(bytes),
        Value::CanonAt { start, end, .. } => {
            out.extend_from_slice(canon.get(*start..*end).unwrap_or_default())
        }
    }
}

/// Appends `{...}` with the given (already sorted) members.
pub fn write_members(out: &mut Vec<u8>, members: &[(JStr<'_>, Value<'_>)]) {
    write_members_in(out, members, &[]);
}

/// `write_members` where `Value::CanonAt` spans refer to `canon`.
pub fn write_members_in(out: &mut Vec<u8>, members: &[(JStr<'_>, Value<'_>)], canon: &[u8]) {
    out.push(b'{');
    write_members_tail(out, members, canon);
}

/// Appends the members and the closing brace, without the opening brace.
pub fn write_members_tail(out: &mut Vec<u8>, members: &[(JStr<'_>, Value<'_>)], canon: &[u8]) {
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_jstr(out, k);
        out.push(b':');
        write_value_in(out, v, canon);
    }
    out.push(b'}');
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
