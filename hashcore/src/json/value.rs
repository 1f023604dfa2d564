//! The parsed form of a JSON text.

use super::order::cmp_utf16;

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

/// An object member: name and value.
pub type Member<'a> = (JStr<'a>, Value<'a>);

/// A parsed JSON value. Object members are sorted in JCS order (UTF-16 code
/// units of the names) and their names are unique.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(f64),
    Str(JStr<'a>),
    Array(Vec<Value<'a>>),
    Object(Vec<Member<'a>>),
    /// An array or object below the parser's tree depth, already in JCS
    /// form: its bytes are `buf[start..end]` of the buffer returned by
    /// `parse_shared` (one buffer for all of them, no allocation per
    /// container). `object`: the bytes are an object, else an array.
    CanonAt {
        start: usize,
        end: usize,
        object: bool,
    },
}

impl<'a> Value<'a> {
    pub fn as_object(&self) -> Option<&[Member<'a>]> {
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
            Value::CanonAt { object, .. } => *object,
            _ => false,
        }
    }

    /// A short name of the JSON type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
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
pub fn get<'v, 'a>(members: &'v [Member<'a>], name: &str) -> Option<&'v Value<'a>> {
    members
        .binary_search_by(|(k, _)| cmp_utf16(k.as_str(), name))
        .ok()
        .map(|i| &members[i].1)
}
