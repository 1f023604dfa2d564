//! The shape of a record (PROTOCOL §1, §4), hex and hashing helpers shared by
//! batch verification, sealing and the chain check.

use sha2::{Digest, Sha256};

use crate::json::{cmp_utf16, JStr, Value, MAX_SAFE_INTEGER};

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
pub const SEAL_KIND: &str = "CHAIN_SEAL";
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why a record does not have the shape of §1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    /// `schema` or `reserved_kind`.
    pub code: &'static str,
    pub member: Option<String>,
    pub detail: String,
}

impl ShapeError {
    fn schema(member: &str, detail: impl Into<String>) -> Self {
        ShapeError {
            code: "schema",
            member: Some(member.to_owned()),
            detail: detail.into(),
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
    members: &[(JStr<'_>, Value<'_>)],
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

/// Checks the types and rules of §1 on a record whose members are exactly
/// `EVENT_MEMBERS` (plus `signature` for a seal, checked by the caller).
/// `members` is sorted, so lookups go by name.
pub fn check_fields(
    members: &[(JStr<'_>, Value<'_>)],
    allow_seal_kind: bool,
) -> Result<(), ShapeError> {
    // At most eight members: a linear scan by equality beats a binary
    // search by UTF-16 order.
    let field = |name: &str| {
        members
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    };
    for name in CHECK_ORDER {
        let Some(v) = field(name) else {
            return Err(ShapeError::schema(name, format!("missing member {name:?}")));
        };
        match name {
            "session_id" => {
                let s = string_member(v, name)?;
                if !is_uuid(s) {
                    return Err(ShapeError::schema(
                        name,
                        format!("session_id must be a lowercase hyphenated UUID, got {s:?}"),
                    ));
                }
            }
            "seq" => {
                if as_seq(v).is_none() {
                    return Err(ShapeError::schema(
                        name,
                        "seq must be an integer in 0..2^53-1",
                    ));
                }
            }
            "kind" => {
                let s = string_member(v, name)?;
                if !is_kind(s) {
                    return Err(ShapeError::schema(
                        name,
                        "kind must be 1-128 chars of [A-Za-z0-9_.:/-]",
                    ));
                }
                if s.starts_with("CHAIN_") && !(allow_seal_kind && s == SEAL_KIND) {
                    return Err(ShapeError {
                        code: "reserved_kind",
                        member: Some(name.to_owned()),
                        detail: format!("kind {s:?} is reserved for the server"),
                    });
                }
            }
            "ts" => {
                let s = string_member(v, name)?;
                if !is_ts(s) {
                    return Err(ShapeError::schema(
                        name,
                        format!("ts must be RFC 3339 UTC YYYY-MM-DDTHH:MM:SS[.f]Z, got {s:?}"),
                    ));
                }
            }
            "payload" => {
                if !v.is_object() {
                    return Err(ShapeError::schema(
                        name,
                        format!("payload must be an object, got {}", v.type_name()),
                    ));
                }
            }
            _ => {
                let s = string_member(v, name)?;
                if !is_lower_hex(s, 64) {
                    return Err(ShapeError::schema(
                        name,
                        format!("{name} must be 64 lowercase hex chars"),
                    ));
                }
            }
        }
    }
    Ok(())
}
