//! The one error type of the crate; `python.rs` maps each variant to a Python exception.

use std::fmt;

/// Which rule of PROTOCOL §2 (or plain JSON syntax) a text broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Malformed,
    Utf8,
    LoneSurrogate,
    DuplicateKey,
    NumberOverflow,
    IntegerRange,
    Depth,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Malformed => "malformed_json",
            Rule::Utf8 => "utf8",
            Rule::LoneSurrogate => "lone_surrogate",
            Rule::DuplicateKey => "duplicate_key",
            Rule::NumberOverflow => "number_overflow",
            Rule::IntegerRange => "integer_range",
            Rule::Depth => "depth",
        }
    }
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A JSON text broke a rule. `segments` are in root-to-leaf order once the
/// parser returns (it prepends them while unwinding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub rule: Rule,
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    pub segments: Vec<Segment>,
    pub message: String,
}

impl JsonError {
    pub(crate) fn new(rule: Rule, offset: usize, message: impl Into<String>) -> Self {
        JsonError {
            rule,
            offset,
            segments: Vec::new(),
            message: message.into(),
        }
    }

    /// Path like `$.events[3].payload.a`.
    pub fn path(&self) -> String {
        format_path(&self.segments)
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} (byte {}): {}",
            self.rule.as_str(),
            self.path(),
            self.offset,
            self.message
        )
    }
}

/// Renders a path: identifiers as `.name`, other keys as `["..."]`.
pub fn format_path(segments: &[Segment]) -> String {
    let mut out = String::from("$");
    for seg in segments {
        match seg {
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
            Segment::Key(k) => {
                let plain = !k.is_empty()
                    && !k.as_bytes()[0].is_ascii_digit()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if plain {
                    out.push('.');
                    out.push_str(k);
                } else {
                    out.push('[');
                    let mut quoted = Vec::new();
                    crate::json::write_escaped_str(&mut quoted, k);
                    out.push_str(&String::from_utf8_lossy(&quoted));
                    out.push(']');
                }
            }
        }
    }
    out
}

/// A batch failed one of the checks of PROTOCOL §1-§3 (see `batch.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub code: &'static str,
    pub index: Option<usize>,
    pub member: Option<String>,
    pub detail: String,
    pub expected: Option<String>,
    pub got: Option<String>,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// Every failure the crate reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Json(Box<JsonError>),
    Batch(Box<BatchError>),
    /// A caller passed an argument outside its domain (bad seed, PEM, hex, ...).
    InvalidArgument(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Json(e) => e.fmt(f),
            Error::Batch(e) => e.fmt(f),
            Error::InvalidArgument(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<JsonError> for Error {
    fn from(e: JsonError) -> Self {
        Error::Json(Box::new(e))
    }
}

impl From<Box<BatchError>> for Error {
    fn from(e: Box<BatchError>) -> Self {
        Error::Batch(e)
    }
}
