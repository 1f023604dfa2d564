//! The auditor's check of a session's records (PROTOCOL §6), streaming: the
//! state is a few hashes and counters, whatever the number of records.

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::{Error, Rule};
use crate::json::{self, JStr, Value};
use crate::record::{
    self, as_seq, hex_decode, hex_encode, is_lower_hex, EVENT_MEMBERS, SEAL_KIND, SEAL_MEMBERS,
    SEAL_PAYLOAD_MEMBERS,
};
use crate::seal::key_id_of;

const SEAL_CHECK_ORDER: [&str; 8] = [
    "session_id",
    "seq",
    "kind",
    "ts",
    "payload",
    "prev_hash",
    "hash",
    "signature",
];

/// The first thing found wrong in a stream of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based index of the record in the stream (0: the stream as a whole).
    pub line: u64,
    pub seq: Option<u64>,
    pub kind: Option<String>,
    pub reason: &'static str,
    pub detail: String,
    pub expected: Option<String>,
    pub found: Option<String>,
}

/// The outcome of a chain check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub ok: bool,
    pub records: u64,
    pub events: u64,
    pub seals: u64,
    pub keys_used: Vec<String>,
    pub problem: Option<Problem>,
}

/// Feeds records one by one; keeps the first problem and then only counts.
pub struct ChainVerifier {
    keys: HashMap<String, VerifyingKey>,
    records: u64,
    events: u64,
    seals: u64,
    keys_used: Vec<String>,
    session_id: Option<String>,
    next_seq: u64,
    last_event_hash: [u8; 32],
    prev_seal: [u8; 32],
    last_seal_seq: Option<u64>,
    last_seq: Option<u64>,
    last_kind: String,
    last_was_seal: bool,
    problem: Option<Problem>,
    scratch: Vec<u8>,
}

/// A problem before its line is known.
struct Found {
    reason: &'static str,
    detail: String,
    expected: Option<String>,
    found: Option<String>,
}

fn found(reason: &'static str, detail: impl Into<String>) -> Found {
    Found {
        reason,
        detail: detail.into(),
        expected: None,
        found: None,
    }
}

fn mismatch(
    reason: &'static str,
    detail: impl Into<String>,
    expected: String,
    got: String,
) -> Found {
    Found {
        reason,
        detail: detail.into(),
        expected: Some(expected),
        found: Some(got),
    }
}

impl ChainVerifier {
    /// `keys`: key_id -> raw 32-byte Ed25519 public key. Each key_id must be
    /// the one §4 derives from its key.
    pub fn new<I, K>(keys: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, Vec<u8>)>,
        K: Into<String>,
    {
        let mut map = HashMap::new();
        for (id, raw) in keys {
            let id = id.into();
            let raw: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
                Error::InvalidArgument(format!("public key {id:?} must be 32 bytes"))
            })?;
            if key_id_of(&raw) != id {
                return Err(Error::InvalidArgument(format!(
                    "key_id {id:?} does not match its public key (expected {:?})",
                    key_id_of(&raw)
                )));
            }
            let vk = VerifyingKey::from_bytes(&raw).map_err(|_| {
                Error::InvalidArgument(format!("public key {id:?} is not a valid Ed25519 point"))
            })?;
            map.insert(id, vk);
        }
        Ok(ChainVerifier {
            keys: map,
            records: 0,
            events: 0,
            seals: 0,
            keys_used: Vec::new(),
            session_id: None,
            next_seq: 0,
            last_event_hash: [0; 32],
            prev_seal: [0; 32],
            last_seal_seq: None,
            last_seq: None,
            last_kind: String::new(),
            last_was_seal: false,
            problem: None,
            scratch: Vec::with_capacity(4096),
        })
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn problem(&self) -> Option<&Problem> {
        self.problem.as_ref()
    }

    /// Feeds one record (one replay line, without its newline).
    pub fn feed(&mut self, line: &[u8]) {
        self.records += 1;
        if self.problem.is_some() {
            return;
        }
        let mut seq = None;
        let mut kind = None;
        if let Err(f) = self.check(line, &mut seq, &mut kind) {
            self.problem = Some(Problem {
                line: self.records,
                seq,
                kind,
                reason: f.reason,
                detail: f.detail,
                expected: f.expected,
                found: f.found,
            });
        }
    }

    /// Feeds newline-separated complete lines; empty lines are ignored.
    pub fn feed_ndjson(&mut self, chunk: &[u8]) {
        for line in chunk.split(|&b| b == b'\n') {
            if !line.is_empty() {
                self.feed(line);
            }
        }
    }

    /// The report as of now: end conditions are checked on the records fed so far.
    pub fn finish(&self) -> ChainReport {
        let problem = self.problem.clone().or_else(|| self.end_problem());
        ChainReport {
            ok: problem.is_none(),
            records: self.records,
            events: self.events,
            seals: self.seals,
            keys_used: self.keys_used.clone(),
            problem,
        }
    }

    fn end_problem(&self) -> Option<Problem> {
        let at_end =
            |reason, detail: String, expected: Option<String>, found: Option<String>| Problem {
                line: self.records,
                seq: self.last_seq,
                kind: (self.records > 0).then(|| self.last_kind.clone()),
                reason,
                detail,
                expected,
                found,
            };
        if self.records == 0 {
            return Some(at_end(
                "empty",
                "the stream holds no record".into(),
                None,
                None,
            ));
        }
        if !self.last_was_seal {
            let uncovered = self
                .next_seq
                .saturating_sub(self.last_seal_seq.map_or(0, |s| s + 1));
            return Some(at_end(
                "last_not_seal",
                format!("the last record is not a seal; {uncovered} event(s) after the last seal are not covered"),
                Some(SEAL_KIND.into()),
                Some(self.last_kind.clone()),
            ));
        }
        let covered = self.last_seal_seq.map_or(0, |s| s + 1);
        if covered != self.next_seq {
            return Some(at_end(
                "uncovered_events",
                format!(
                    "seals cover events up to seq {covered}, the last event has seq {}",
                    self.next_seq.saturating_sub(1)
                ),
                Some(self.next_seq.to_string()),
                Some(covered.to_string()),
            ));
        }
        None
    }

    fn check(
        &mut self,
        line: &[u8],
        seq_out: &mut Option<u64>,
        kind_out: &mut Option<String>,
    ) -> Result<(), Found> {
        // Containers inside payloads (depth 3) are only serialized.
        let v = json::parse_with(line, false, 3).map_err(|e| Found {
            reason: if e.rule == Rule::Malformed {
                "malformed_json"
            } else {
                "json_rule"
            },
            detail: e.to_string(),
            expected: None,
            found: Some(e.rule.as_str().to_owned()),
        })?;
        let m = v.as_object().ok_or_else(|| {
            found(
                "schema",
                format!("a record must be an object, got {}", v.type_name()),
            )
        })?;
        let seq = json::get(m, "seq").and_then(as_seq);
        let kind = json::get(m, "kind").and_then(Value::as_str);
        *seq_out = seq;
        *kind_out = kind.map(str::to_owned);
        let is_seal = kind == Some(SEAL_KIND);
        let shape = if is_seal {
            record::check_members(m, &SEAL_MEMBERS, &SEAL_CHECK_ORDER, "seal")
        } else {
            record::check_members(m, &EVENT_MEMBERS, &record::CHECK_ORDER, "event")
        };
        shape
            .and_then(|()| record::check_fields(m, true))
            .map_err(|s| Found {
                reason: s.code,
                detail: s.detail,
                expected: None,
                found: s.member,
            })?;
        // Sorted members: hash, kind, payload, prev_hash, seq, session_id, [signature,] ts.
        let text = |j: usize| m[j].1.as_str().unwrap_or_default();
        let seq = seq.unwrap_or(0);
        let given_hash = text(0);
        let session_id = text(5);
        match &self.session_id {
            None => self.session_id = Some(session_id.to_owned()),
            Some(s) if s != session_id => {
                return Err(mismatch(
                    "mixed_sessions",
                    "the record belongs to another session than the first record",
                    s.clone(),
                    session_id.to_owned(),
                ))
            }
            Some(_) => {}
        }

        self.scratch.clear();
        self.scratch.push(b'{');
        for (i, (k, val)) in m.iter().enumerate().skip(1) {
            if is_seal && i == 6 {
                continue;
            }
            if i > 1 {
                self.scratch.push(b',');
            }
            json::write_jstr(&mut self.scratch, k);
            self.scratch.push(b':');
            json::write_value(&mut self.scratch, val);
        }
        self.scratch.push(b'}');
        let digest = record::sha256(&self.scratch);
        if hex_decode::<32>(given_hash) != Some(digest) {
            return Err(mismatch(
                "hash_mismatch",
                "the record's hash does not match its content",
                hex_encode(&digest),
                given_hash.to_owned(),
            ));
        }
        let prev_hash = hex_decode::<32>(text(3)).unwrap_or_default();

        if is_seal {
            self.check_seal(m, seq, digest, prev_hash)?;
        } else {
            if seq != self.next_seq {
                return Err(mismatch(
                    "seq_gap",
                    format!(
                        "expected the event with seq {}, found seq {seq}",
                        self.next_seq
                    ),
                    self.next_seq.to_string(),
                    seq.to_string(),
                ));
            }
            if prev_hash != self.last_event_hash {
                return Err(mismatch(
                    "broken_link",
                    "prev_hash is not the hash of the previous event",
                    hex_encode(&self.last_event_hash),
                    text(3).to_owned(),
                ));
            }
            self.next_seq += 1;
            self.events += 1;
            self.last_event_hash = digest;
            self.last_was_seal = false;
        }
        self.last_seq = Some(seq);
        self.last_kind.clear();
        self.last_kind.push_str(text(1));

        // Replay promises canonical lines; the hash above was taken on the parsed value.
        let canonical = if is_seal {
            let mut full = Vec::with_capacity(line.len());
            json::write_members(&mut full, m);
            full == line
        } else {
            let head = b"{\"hash\":\"";
            line.len() == head.len() + 66 + self.scratch.len() - 1
                && line.starts_with(head)
                && &line[head.len()..head.len() + 64] == given_hash.as_bytes()
                && &line[head.len() + 64..head.len() + 66] == b"\","
                && line[head.len() + 66..] == self.scratch[1..]
        };
        if !canonical {
            return Err(found(
                "not_canonical",
                "the line is not the JCS serialization of its record",
            ));
        }
        Ok(())
    }

    fn check_seal(
        &mut self,
        m: &[(JStr<'_>, Value<'_>)],
        seq: u64,
        digest: [u8; 32],
        prev_hash: [u8; 32],
    ) -> Result<(), Found> {
        let payload = m[2].1.as_object().unwrap_or_default();
        record::check_members(
            payload,
            &SEAL_PAYLOAD_MEMBERS,
            &SEAL_PAYLOAD_MEMBERS,
            "seal payload",
        )
        .map_err(|s| Found {
            reason: "schema",
            detail: s.detail,
            expected: None,
            found: s.member.map(|x| format!("payload.{x}")),
        })?;
        let first_seq = as_seq(&payload[0].1).ok_or_else(|| {
            found(
                "schema",
                "payload.first_seq must be an integer in 0..2^53-1",
            )
        })?;
        let key_id = payload[1]
            .1
            .as_str()
            .filter(|s| is_lower_hex(s, 16))
            .ok_or_else(|| found("schema", "payload.key_id must be 16 lowercase hex chars"))?;
        let prev_seal_hex = payload[2]
            .1
            .as_str()
            .filter(|s| is_lower_hex(s, 64))
            .ok_or_else(|| found("schema", "payload.prev_seal must be 64 lowercase hex chars"))?;
        let signature_hex = m[6].1.as_str().unwrap_or_default();
        let signature = hex_decode::<64>(signature_hex)
            .ok_or_else(|| found("schema", "signature must be 128 lowercase hex chars"))?;

        let want_first = self.last_seal_seq.map_or(0, |s| s + 1);
        if self.events == 0 || self.next_seq <= want_first {
            return Err(mismatch(
                "seal_coverage",
                "the seal covers no event that is not already covered",
                format!("an event with seq {want_first} before the seal"),
                format!("seal at seq {seq}"),
            ));
        }
        let last_event = self.next_seq - 1;
        if seq != last_event {
            return Err(mismatch(
                "seal_coverage",
                format!("the seal's seq must be the seq of the last event ({last_event})"),
                last_event.to_string(),
                seq.to_string(),
            ));
        }
        if first_seq != want_first {
            return Err(mismatch(
                "seal_coverage",
                format!("payload.first_seq must follow the previous seal (seq {want_first})"),
                want_first.to_string(),
                first_seq.to_string(),
            ));
        }
        if prev_hash != self.last_event_hash {
            return Err(mismatch(
                "seal_prev_hash",
                format!("the seal's prev_hash is not the hash of the event at seq {seq}"),
                hex_encode(&self.last_event_hash),
                hex_encode(&prev_hash),
            ));
        }
        if hex_decode::<32>(prev_seal_hex) != Some(self.prev_seal) {
            return Err(mismatch(
                "seal_link",
                "payload.prev_seal is not the hash of the previous seal",
                hex_encode(&self.prev_seal),
                prev_seal_hex.to_owned(),
            ));
        }
        let Some(vk) = self.keys.get(key_id) else {
            return Err(mismatch(
                "unknown_key",
                format!("no public key with key_id {key_id}"),
                "a known key_id".into(),
                key_id.to_owned(),
            ));
        };
        if vk
            .verify_strict(&digest, &Signature::from_bytes(&signature))
            .is_err()
        {
            return Err(mismatch(
                "bad_signature",
                format!("the signature does not verify under key {key_id}"),
                format!("a valid Ed25519 signature by {key_id}"),
                signature_hex.to_owned(),
            ));
        }
        if !self.keys_used.iter().any(|k| k == key_id) {
            self.keys_used.push(key_id.to_owned());
        }
        self.seals += 1;
        self.prev_seal = digest;
        self.last_seal_seq = Some(seq);
        self.last_was_seal = true;
        Ok(())
    }
}
