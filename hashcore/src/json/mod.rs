//! I-JSON parser (PROTOCOL §2) and RFC 8785 (JCS) serializer.
//!
//! Hand-written because no crate reports duplicate keys at any depth, lone
//! surrogates, integer-literal range and depth with a path. Strings without
//! escapes are borrowed from the input and written back without a rescan.
//!
//! `grammar` reads a text once and hands each value to a sink: `tree`
//! builds a `Value`, `canonical` writes JCS bytes as it reads. `lex` reads
//! tokens, `order` is JCS member order, `value` the parsed form.

mod canonical;
mod grammar;
mod lex;
mod order;
mod tree;
mod value;

pub use canonical::{
    write_escaped_str, write_jstr, write_member, write_members, write_members_in,
    write_members_tail, write_value, write_value_in,
};
pub use order::cmp_utf16;
pub use value::{get, JStr, Member, Value};

use crate::error::JsonError;
use canonical::Canonical;
use lex::Lexer;
use tree::Tree;

/// Deepest nesting allowed; the root array/object is depth 1.
pub const MAX_DEPTH: usize = 64;
/// Largest integer literal allowed unless JCS writes it (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Parses one JSON text under the rules of PROTOCOL §2 into a full tree.
pub fn parse(input: &[u8]) -> Result<Value<'_>, JsonError> {
    parse_tree(input, true, usize::MAX, Vec::new()).map(|(v, _)| v)
}

/// Parses one JSON text as an auditor reads JCS output (PROTOCOL §6): every
/// number is a double, so an integer literal above 2^53-1 is read as the
/// double it rounds to, whatever its digits.
pub fn parse_doubles(input: &[u8]) -> Result<Value<'_>, JsonError> {
    parse_tree(input, false, usize::MAX, Vec::new()).map(|(v, _)| v)
}

/// Parses one JSON text; arrays and objects at depth >= `canon_depth` (the
/// root container is depth 1) are checked under the same rules but written
/// in JCS form to the returned buffer, as `Value::CanonAt` spans, instead of
/// built as trees: much cheaper when only their serialization is needed.
/// `integer_range`: apply the integer rule of PROTOCOL §2, else read
/// integers as doubles (§6).
pub fn parse_shared(
    input: &[u8],
    integer_range: bool,
    canon_depth: usize,
) -> Result<(Value<'_>, Vec<u8>), JsonError> {
    parse_tree(
        input,
        integer_range,
        canon_depth,
        Vec::with_capacity(input.len()),
    )
}

fn parse_tree(
    input: &[u8],
    integer_range: bool,
    canon_depth: usize,
    buf: Vec<u8>,
) -> Result<(Value<'_>, Vec<u8>), JsonError> {
    let mut lx = Lexer::new(input, integer_range);
    let mut tree = Tree::new(canon_depth, Canonical::new(buf));
    grammar::document(&mut lx, &mut tree).map_err(|e| finish_error(*e))?;
    let root = tree.root();
    Ok((root, tree.canon.out))
}

/// JSON text -> RFC 8785 bytes.
pub fn canonicalize(input: &[u8]) -> Result<Vec<u8>, JsonError> {
    let mut lx = Lexer::new(input, true);
    let mut sink = Canonical::new(Vec::with_capacity(input.len()));
    grammar::document(&mut lx, &mut sink).map_err(|e| finish_error(*e))?;
    Ok(sink.out)
}

fn finish_error(mut e: JsonError) -> JsonError {
    // Segments were pushed leaf first while unwinding.
    e.segments.reverse();
    e
}
