//! The sink that builds a `Value` tree; containers at or below a given depth
//! are handed to a `Canonical` sink and kept as `Value::CanonAt` spans.

use super::canonical::Canonical;
use super::grammar::{self, Sink};
use super::lex::{Lexer, PResult};
use super::order::{sort_members, Named};
use super::{JStr, Member, Value};

impl Named for Member<'_> {
    #[inline]
    fn name(&self) -> &str {
        self.0.as_str()
    }
}

pub(super) struct Tree<'a> {
    /// Scratch stacks: values (and member names) are pushed here; a
    /// container moves its children to a Vec of the exact size, so no large
    /// value travels through return slots.
    keys: Vec<JStr<'a>>,
    items: Vec<Value<'a>>,
    /// Containers at this depth or deeper go to `canon`.
    canon_depth: usize,
    pub(super) canon: Canonical<'a>,
}

impl<'a> Tree<'a> {
    pub(super) fn new(canon_depth: usize, canon: Canonical<'a>) -> Self {
        Tree {
            keys: Vec::with_capacity(32),
            items: Vec::with_capacity(64),
            canon_depth,
            canon,
        }
    }

    /// The root value after `grammar::document`.
    pub(super) fn root(&mut self) -> Value<'a> {
        self.items.pop().unwrap_or(Value::Null)
    }
}

impl<'a> Sink<'a> for Tree<'a> {
    #[inline]
    fn string(&mut self, lx: &mut Lexer<'a>) -> PResult<()> {
        let s = lx.string()?;
        self.items.push(Value::Str(s));
        Ok(())
    }

    #[inline]
    fn number(&mut self, lx: &mut Lexer<'a>) -> PResult<()> {
        let n = lx.number()?;
        self.items.push(Value::Number(n));
        Ok(())
    }

    #[inline]
    fn boolean(&mut self, b: bool) {
        self.items.push(Value::Bool(b));
    }

    #[inline]
    fn null(&mut self) {
        self.items.push(Value::Null);
    }

    fn container(&mut self, lx: &mut Lexer<'a>, depth: usize, object: bool) -> PResult<()> {
        if depth < self.canon_depth {
            return if object {
                grammar::parse_object(lx, self, depth)
            } else {
                grammar::parse_array(lx, self, depth)
            };
        }
        let start = self.canon.out.len();
        self.canon.container(lx, depth, object)?;
        self.items.push(Value::CanonAt {
            start,
            end: self.canon.out.len(),
            object,
        });
        Ok(())
    }

    #[inline]
    fn array_start(&mut self) -> usize {
        self.items.len()
    }

    #[inline]
    fn array_comma(&mut self) {}

    fn array_end(&mut self, base: usize) {
        let items = self.items.drain(base..).collect();
        self.items.push(Value::Array(items));
    }

    #[inline]
    fn object_start(&mut self) -> (usize, usize) {
        (self.keys.len(), self.items.len())
    }

    #[inline]
    fn member_start(&mut self, _name: &JStr<'a>, _first: bool) -> usize {
        0
    }

    #[inline]
    fn member_end(&mut self, name: JStr<'a>, _start: usize) {
        self.keys.push(name);
    }

    fn object_end(&mut self, (key_base, base): (usize, usize)) -> Result<(), String> {
        let mut members: Vec<Member<'a>> = Vec::with_capacity(self.keys.len() - key_base);
        members.extend(self.keys.drain(key_base..).zip(self.items.drain(base..)));
        sort_members(&mut members)?;
        self.items.push(Value::Object(members));
        Ok(())
    }
}
