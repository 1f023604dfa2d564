//! The shape of a record (PROTOCOL §1, §4), hex and hashing helpers shared by
//! batch verification, sealing and the chain check.

use sha2::{Digest, Sha256};

use crate::error::{BatchCode, ProblemReason};
use crate::json::{self, cmp_utf16, Member, Value, MAX_SAFE_INTEGER};

/// An event's members, in JCS (sorted) order.
pub const EVENT_MEMBERS: [&str; 7] = [
    "hash",
    "kind",
    "payload",
    "prev_hash",
    "seq",
    "session_id",
    "ts",
];
/// A seal's members, in JCS (sorted) order.
pub const SEAL_MEMBERS: [&str; 8] = [
    "hash",
    "kind",
    "payload",
    "prev_hash",
    "seq",
    "session_id",
    "signature",
    "ts",
];
/// A seal payload's members, in JCS order.
pub const SEAL_PAYLOAD_MEMBERS: [&str; 3] = ["first_seq", "key_id", "prev_seal"];
/// The order in which members are checked and reported (PROTOCOL §1 table order).
pub const CHECK_ORDER: [&str; 7] = [
    "session_id",
    "seq",
    "kind",
    "ts",
    "payload",
    "prev_hash",
    "hash",
];
/// `CHECK_ORDER` for a seal.
pub const SEAL_CHECK_ORDER: [&str; 8] = [
    "session_id",
    "seq",
    "kind",
    "ts",
    "payload",
    "prev_hash",
    "hash",
    "signature",
];
pub const SEAL_KIND: &str = "CHAIN_SEAL";
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which rule of §1 a record broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeFault {
    Schema,
    ReservedKind,
}

impl From<ShapeFault> for BatchCode {
    fn from(f: ShapeFault) -> Self {
        match f {
            ShapeFault::Schema => BatchCode::Schema,
            ShapeFault::ReservedKind => BatchCode::ReservedKind,
        }
    }
}

impl From<ShapeFault> for ProblemReason {
    fn from(f: ShapeFault) -> Self {
        match f {
            ShapeFault::Schema => ProblemReason::Schema,
            ShapeFault::ReservedKind => ProblemReason::ReservedKind,
        }
    }
}

/// Why a record does not have the shape of §1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    pub code: ShapeFault,
    pub member: Option<String>,
    pub detail: String,
}

impl ShapeError {
    fn schema(member: &str, detail: impl Into<String>) -> Self {
        ShapeError {
            code: ShapeFault::Schema,
            member: Some(member.to_owned()),
            detail: detail.into(),
        }
    }
}

/// The members of a record that passed the checks of §1, by name.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'v, 'a> {
    pub session_id: &'v str,
    pub seq: u64,
    pub kind: &'v str,
    pub ts: &'v str,
    pub payload: &'v Value<'a>,
    pub prev_hash: &'v str,
    pub hash: &'v str,
    /// A seal's signature, not yet checked; `None` for an event.
    pub signature: Option<&'v str>,
    /// All members, in JCS order.
    pub members: &'v [Member<'a>],
}

impl RecordView<'_, '_> {
    /// Appends the members that `hash` covers (all but `hash` and
    /// `signature`, §1), comma-separated, without braces.
    pub fn write_hashed_members(&self, out: &mut Vec<u8>, canon: &[u8]) {
        let mut first = true;
        for (k, v) in self.members {
            if matches!(k.as_str(), "hash" | "signature") {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            json::write_member(out, k, v, canon);
        }
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of `a` followed by `b`.
pub fn sha256_parts(a: &[u8], b: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(a)
        .chain_update(b)
        .finalize()
        .into()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub fn hex_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// Decodes lowercase hex of exactly `N` bytes.
pub fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 15);
    }
    (bad & INVALID == 0).then_some(out)
}

/// Marks a byte that is not a lowercase hex digit in `NIBBLE`.
const INVALID: u8 = 0x10;

/// The value of each lowercase hex digit; `INVALID` for other bytes.
static NIBBLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn all_lower_hex(b: &[u8]) -> bool {
    b.iter().fold(0u8, |acc, &c| acc | NIBBLE[usize::from(c)]) & INVALID == 0
}

pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && all_lower_hex(s.as_bytes())
}

/// Lowercase hyphenated UUID, 8-4-4-4-12.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b[8] == b'-'
        && b[13] == b'-'
        && b[18] == b'-'
        && b[23] == b'-'
        && all_lower_hex(&b[..8])
        && all_lower_hex(&b[9..13])
        && all_lower_hex(&b[14..18])
        && all_lower_hex(&b[19..23])
        && all_lower_hex(&b[24..])
}

/// 1-128 chars of `[A-Za-z0-9_.:/-]`.
pub fn is_kind(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'/' | b'-'))
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` with valid field ranges.
pub fn is_ts(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let seps = b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':';
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let frac = &b[19..b.len() - 1];
    let frac_ok = frac.is_empty()
        || (frac[0] == b'.'
            && (2..=10).contains(&frac.len())
            && frac[1..].iter().all(u8::is_ascii_digit));
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    seps && frac_ok && (1..=days).contains(&d) && h <= 23 && mi <= 59 && sec <= 60
}

/// A number with an integral value in 0..=2^53-1.
pub fn as_seq(v: &Value<'_>) -> Option<u64> {
    let f = v.as_f64()?;
    (f.fract() == 0.0 && (0.0..=MAX_SAFE_INTEGER as f64).contains(&f)).then_some(f as u64)
}

/// Checks that an object has exactly `expected` (sorted) members; reports the
/// first unknown member, else the first missing one in `report_order`.
pub fn check_members(
    members: &[Member<'_>],
    expected: &[&str],
    report_order: &[&str],
    what: &str,
) -> Result<(), ShapeError> {
    if members.len() == expected.len()
        && members
            .iter()
            .zip(expected)
            .all(|((k, _), e)| k.as_str() == *e)
    {
        return Ok(());
    }
    for (k, _) in members {
        if !expected.contains(&k.as_str()) {
            return Err(ShapeError::schema(
                k.as_str(),
                format!("unknown member {:?} in {what}", k.as_str()),
            ));
        }
    }
    let missing = report_order
        .iter()
        .chain(expected)
        .find(|e| {
            members
                .binary_search_by(|(k, _)| cmp_utf16(k.as_str(), e))
                .is_err()
        })
        .copied()
        .unwrap_or("?");
    Err(ShapeError::schema(
        missing,
        format!("missing member {missing:?} in {what}"),
    ))
}

fn string_member<'v>(v: &'v Value<'_>, member: &str) -> Result<&'v str, ShapeError> {
    v.as_str().ok_or_else(|| {
        ShapeError::schema(
            member,
            format!("{member} must be a string, got {}", v.type_name()),
        )
    })
}

/// Checks the members of an event (`seal`: a seal) against §1: exactly the
/// expected names, then their types and rules.
pub fn check_record<'v, 'a>(
    members: &'v [Member<'a>],
    seal: bool,
) -> Result<RecordView<'v, 'a>, ShapeError> {
    if seal {
        check_members(members, &SEAL_MEMBERS, &SEAL_CHECK_ORDER, "seal")?;
    } else {
        check_members(members, &EVENT_MEMBERS, &CHECK_ORDER, "event")?;
    }
    check_fields(members, seal)
}

/// Checks the types and rules of §1, in `CHECK_ORDER`, on a record whose
/// members are exactly `EVENT_MEMBERS` (plus `signature` for a seal,
/// checked by the caller).
pub fn check_fields<'v, 'a>(
    members: &'v [Member<'a>],
    allow_seal_kind: bool,
) -> Result<RecordView<'v, 'a>, ShapeError> {
    // At most eight members: a linear scan by equality beats a binary
    // search by UTF-16 order.
    let field = |name: &str| {
        members
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
            .ok_or_else(|| ShapeError::schema(name, format!("missing member {name:?}")))
    };
    let hex64 = |name: &str| {
        let s = string_member(field(name)?, name)?;
        if is_lower_hex(s, 64) {
            Ok(s)
        } else {
            Err(ShapeError::schema(
                name,
                format!("{name} must be 64 lowercase hex chars"),
            ))
        }
    };

    let session_id = string_member(field("session_id")?, "session_id")?;
    if !is_uuid(session_id) {
        return Err(ShapeError::schema(
            "session_id",
            format!("session_id must be a lowercase hyphenated UUID, got {session_id:?}"),
        ));
    }
    let seq = as_seq(field("seq")?)
        .ok_or_else(|| ShapeError::schema("seq", "seq must be an integer in 0..2^53-1"))?;
    let kind = string_member(field("kind")?, "kind")?;
    if !is_kind(kind) {
        return Err(ShapeError::schema(
            "kind",
            "kind must be 1-128 chars of [A-Za-z0-9_.:/-]",
        ));
    }
    if kind.starts_with("CHAIN_") && !(allow_seal_kind && kind == SEAL_KIND) {
        return Err(ShapeError {
            code: ShapeFault::ReservedKind,
            member: Some("kind".to_owned()),
            detail: format!("kind {kind:?} is reserved for the server"),
        });
    }
    let ts = string_member(field("ts")?, "ts")?;
    if !is_ts(ts) {
        return Err(ShapeError::schema(
            "ts",
            format!("ts must be RFC 3339 UTC YYYY-MM-DDTHH:MM:SS[.f]Z, got {ts:?}"),
        ));
    }
    let payload = field("payload")?;
    if !payload.is_object() {
        return Err(ShapeError::schema(
            "payload",
            format!("payload must be an object, got {}", payload.type_name()),
        ));
    }
    let prev_hash = hex64("prev_hash")?;
    let hash = hex64("hash")?;
    let signature = if kind == SEAL_KIND {
        members
            .iter()
            .find(|(k, _)| k.as_str() == "signature")
            .and_then(|(_, v)| v.as_str())
    } else {
        None
    };
    Ok(RecordView {
        session_id,
        seq,
        kind,
        ts,
        payload,
        prev_hash,
        hash,
        signature,
        members,
    })
}
