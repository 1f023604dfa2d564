//! The one error type of the crate; `python.rs` maps each variant to a Python exception.

use std::fmt;

/// A fieldless enum of wire codes: `as_str()` is the code, `ALL` lists them.
macro_rules! codes {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            /// Every code, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

codes! {
    /// Which rule of PROTOCOL §2 (or plain JSON syntax) a text broke.
    Rule {
        Malformed => "malformed_json",
        Utf8 => "utf8",
        LoneSurrogate => "lone_surrogate",
        DuplicateKey => "duplicate_key",
        NumberOverflow => "number_overflow",
        IntegerRange => "integer_range",
        Depth => "depth",
    }
}

codes! {
    /// Why an ingest batch was rejected (`BatchError.code`, PROTOCOL §3).
    BatchCode {
        MalformedJson => "malformed_json",
        JsonRule => "json_rule",
        Schema => "schema",
        TooLarge => "too_large",
        ReservedKind => "reserved_kind",
        MixedSessions => "mixed_sessions",
        SeqNotContiguous => "seq_not_contiguous",
        HashMismatch => "hash_mismatch",
        BrokenLink => "broken_link",
    }
}

codes! {
    /// Why a chain failed the auditor's check (`Problem.reason`, PROTOCOL §6).
    ProblemReason {
        MalformedJson => "malformed_json",
        JsonRule => "json_rule",
        Schema => "schema",
        ReservedKind => "reserved_kind",
        MixedSessions => "mixed_sessions",
        HashMismatch => "hash_mismatch",
        SeqGap => "seq_gap",
        BrokenLink => "broken_link",
        SealCoverage => "seal_coverage",
        SealPrevHash => "seal_prev_hash",
        SealLink => "seal_link",
        UnknownKey => "unknown_key",
        BadSignature => "bad_signature",
        NotCanonical => "not_canonical",
        Empty => "empty",
        LastNotSeal => "last_not_seal",
        UncoveredEvents => "uncovered_events",
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
    pub code: BatchCode,
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
