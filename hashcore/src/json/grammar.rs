//! The JSON grammar, written once. What a value becomes is up to a `Sink`:
//! a tree (`tree.rs`) or JCS bytes (`canonical.rs`). The functions are
//! generic, so each sink gets its own copy with no dynamic dispatch.

use super::lex::{Lexer, PResult};
use super::JStr;
use crate::error::{JsonError, Rule, Segment};

/// Receives the values the grammar reads, in input order.
pub(super) trait Sink<'a>: Sized {
    /// Reads a string value at `lx.pos` (a sink may copy it without decoding).
    fn string(&mut self, lx: &mut Lexer<'a>) -> PResult<()>;
    /// Reads a number at `lx.pos`.
    fn number(&mut self, lx: &mut Lexer<'a>) -> PResult<()>;
    fn boolean(&mut self, b: bool);
    fn null(&mut self);

    /// An array or object at nesting `depth` (the root container is 1).
    /// A sink may hand it to another sink.
    #[inline]
    fn container(&mut self, lx: &mut Lexer<'a>, depth: usize, object: bool) -> PResult<()> {
        if object {
            parse_object(lx, self, depth)
        } else {
            parse_array(lx, self, depth)
        }
    }

    /// After `[`; the mark is handed back to `array_end`.
    fn array_start(&mut self) -> usize;
    /// After a `,` between items.
    fn array_comma(&mut self);
    fn array_end(&mut self, mark: usize);

    /// After `{`; the mark is handed back to `object_end`.
    fn object_start(&mut self) -> (usize, usize);
    /// Before a member's value; the result is handed back to `member_end`.
    fn member_start(&mut self, name: &JStr<'a>, first: bool) -> usize;
    fn member_end(&mut self, name: JStr<'a>, start: usize);
    /// After `}`; `Err(name)` if a member name appears twice.
    fn object_end(&mut self, mark: (usize, usize)) -> Result<(), String>;
}

/// One whole JSON text, with nothing but whitespace around it.
pub(super) fn document<'a, S: Sink<'a>>(lx: &mut Lexer<'a>, sink: &mut S) -> PResult<()> {
    lx.skip_ws();
    value(lx, sink, 0)?;
    lx.skip_ws();
    if lx.pos != lx.s.len() {
        return Err(lx.unexpected("end of input"));
    }
    Ok(())
}

/// One value inside a container at `depth` (0: the root value).
fn value<'a, S: Sink<'a>>(lx: &mut Lexer<'a>, sink: &mut S, depth: usize) -> PResult<()> {
    match lx.peek() {
        Some(b'"') => sink.string(lx),
        Some(b'-' | b'0'..=b'9') => sink.number(lx),
        Some(b'{') => sink.container(lx, depth + 1, true),
        Some(b'[') => sink.container(lx, depth + 1, false),
        Some(b't') => lx.word(b"true").map(|()| sink.boolean(true)),
        Some(b'f') => lx.word(b"false").map(|()| sink.boolean(false)),
        Some(b'n') => lx.word(b"null").map(|()| sink.null()),
        _ => Err(lx.unexpected("a value")),
    }
}

/// Adds the step to the path of an error while unwinding.
fn at(mut e: Box<JsonError>, seg: Segment) -> Box<JsonError> {
    e.segments.push(seg);
    e
}

pub(super) fn parse_array<'a, S: Sink<'a>>(
    lx: &mut Lexer<'a>,
    sink: &mut S,
    depth: usize,
) -> PResult<()> {
    lx.enter(depth)?;
    lx.pos += 1;
    let mark = sink.array_start();
    lx.skip_ws();
    if lx.peek() == Some(b']') {
        lx.pos += 1;
        sink.array_end(mark);
        return Ok(());
    }
    let mut index = 0;
    loop {
        value(lx, sink, depth).map_err(|e| at(e, Segment::Index(index)))?;
        lx.skip_ws();
        match lx.peek() {
            Some(b',') => {
                lx.pos += 1;
                sink.array_comma();
                lx.skip_ws();
                index += 1;
            }
            Some(b']') => {
                lx.pos += 1;
                sink.array_end(mark);
                return Ok(());
            }
            _ => return Err(at(lx.unexpected("',' or ']'"), Segment::Index(index))),
        }
    }
}

pub(super) fn parse_object<'a, S: Sink<'a>>(
    lx: &mut Lexer<'a>,
    sink: &mut S,
    depth: usize,
) -> PResult<()> {
    lx.enter(depth)?;
    let open = lx.pos;
    lx.pos += 1;
    let mark = sink.object_start();
    lx.skip_ws();
    let mut first = true;
    if lx.peek() == Some(b'}') {
        lx.pos += 1;
    } else {
        loop {
            if lx.peek() != Some(b'"') {
                return Err(lx.unexpected("a member name"));
            }
            let name = lx.string()?;
            lx.skip_ws();
            if lx.peek() != Some(b':') {
                let seg = Segment::Key(name.as_str().to_owned());
                return Err(at(lx.unexpected("':'"), seg));
            }
            lx.pos += 1;
            lx.skip_ws();
            let start = sink.member_start(&name, first);
            if let Err(e) = value(lx, sink, depth) {
                return Err(at(e, Segment::Key(name.as_str().to_owned())));
            }
            sink.member_end(name, start);
            first = false;
            lx.skip_ws();
            match lx.peek() {
                Some(b',') => {
                    lx.pos += 1;
                    lx.skip_ws();
                }
                Some(b'}') => {
                    lx.pos += 1;
                    break;
                }
                _ => return Err(lx.unexpected("',' or '}'")),
            }
        }
    }
    sink.object_end(mark).map_err(|dup| {
        let e = JsonError::new(
            Rule::DuplicateKey,
            open,
            format!("member name {dup:?} appears twice"),
        );
        at(Box::new(e), Segment::Key(dup))
    })
}
