//! The auditor's check of a session's records (PROTOCOL §6), streaming: the
//! state is a few hashes and counters, whatever the number of records.

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::{Error, ProblemReason, Rule};
use crate::json::{self, Value};
use crate::record::{
    self, as_seq, hex_decode, hex_encode, is_lower_hex, RecordView, SEAL_KIND, SEAL_PAYLOAD_MEMBERS,
};
use crate::seal::key_id_of;

/// How a canonical record line starts: `hash` sorts first (§1, §5).
const LINE_HEAD: &[u8] = b"{\"hash\":\"";

/// The first thing found wrong in a stream of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based index of the record in the stream (0: the stream as a whole).
    pub line: u64,
    pub seq: Option<u64>,
    pub kind: Option<String>,
    pub reason: ProblemReason,
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
    reason: ProblemReason,
    detail: String,
    expected: Option<String>,
    found: Option<String>,
}

fn found(reason: ProblemReason, detail: impl Into<String>) -> Found {
    Found {
        reason,
        detail: detail.into(),
        expected: None,
        found: None,
    }
}

fn mismatch(
    reason: ProblemReason,
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
                ProblemReason::Empty,
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
                ProblemReason::LastNotSeal,
                format!("the last record is not a seal; {uncovered} event(s) after the last seal are not covered"),
                Some(SEAL_KIND.into()),
                Some(self.last_kind.clone()),
            ));
        }
        let covered = self.last_seal_seq.map_or(0, |s| s + 1);
        if covered != self.next_seq {
            return Some(at_end(
                ProblemReason::UncoveredEvents,
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
        let (v, canon) = json::parse_shared(line, false, 3).map_err(|e| Found {
            reason: if e.rule == Rule::Malformed {
                ProblemReason::MalformedJson
            } else {
                ProblemReason::JsonRule
            },
            detail: e.to_string(),
            expected: None,
            found: Some(e.rule.as_str().to_owned()),
        })?;
        let m = v.as_object().ok_or_else(|| {
            found(
                ProblemReason::Schema,
                format!("a record must be an object, got {}", v.type_name()),
            )
        })?;
        // Known before the shape check, for the report.
        let seq = json::get(m, "seq").and_then(as_seq);
        let kind = json::get(m, "kind").and_then(Value::as_str);
        *seq_out = seq;
        *kind_out = kind.map(str::to_owned);
        let is_seal = kind == Some(SEAL_KIND);
        let rec = record::check_record(m, is_seal).map_err(|s| Found {
            reason: s.code.into(),
            detail: s.detail,
            expected: None,
            found: s.member,
        })?;
        match &self.session_id {
            None => self.session_id = Some(rec.session_id.to_owned()),
            Some(s) if s != rec.session_id => {
                return Err(mismatch(
                    ProblemReason::MixedSessions,
                    "the record belongs to another session than the first record",
                    s.clone(),
                    rec.session_id.to_owned(),
                ))
            }
            Some(_) => {}
        }

        self.scratch.clear();
        self.scratch.push(b'{');
        rec.write_hashed_members(&mut self.scratch, &canon);
        self.scratch.push(b'}');
        let digest = record::sha256(&self.scratch);
        if hex_decode::<32>(rec.hash) != Some(digest) {
            return Err(mismatch(
                ProblemReason::HashMismatch,
                "the record's hash does not match its content",
                hex_encode(&digest),
                rec.hash.to_owned(),
            ));
        }
        let prev_hash = hex_decode::<32>(rec.prev_hash).unwrap_or_default();

        if is_seal {
            self.check_seal(&rec, digest, prev_hash)?;
        } else {
            if rec.seq != self.next_seq {
                return Err(mismatch(
                    ProblemReason::SeqGap,
                    format!(
                        "expected the event with seq {}, found seq {}",
                        self.next_seq, rec.seq
                    ),
                    self.next_seq.to_string(),
                    rec.seq.to_string(),
                ));
            }
            if prev_hash != self.last_event_hash {
                return Err(mismatch(
                    ProblemReason::BrokenLink,
                    "prev_hash is not the hash of the previous event",
                    hex_encode(&self.last_event_hash),
                    rec.prev_hash.to_owned(),
                ));
            }
            self.next_seq += 1;
            self.events += 1;
            self.last_event_hash = digest;
            self.last_was_seal = false;
        }
        self.last_seq = Some(rec.seq);
        self.last_kind.clear();
        self.last_kind.push_str(rec.kind);

        // Replay promises canonical lines; the hash above was taken on the parsed value.
        let canonical = if is_seal {
            let mut full = Vec::with_capacity(line.len());
            json::write_members_in(&mut full, m, &canon);
            full == line
        } else {
            // An event's line is `{"hash":"<hash>",` + the hashed object minus its `{`.
            line.strip_prefix(LINE_HEAD)
                .and_then(|r| r.strip_prefix(rec.hash.as_bytes()))
                .and_then(|r| r.strip_prefix(b"\","))
                == self.scratch.get(1..)
        };
        if !canonical {
            return Err(found(
                ProblemReason::NotCanonical,
                "the line is not the JCS serialization of its record",
            ));
        }
        Ok(())
    }

    fn check_seal(
        &mut self,
        rec: &RecordView<'_, '_>,
        digest: [u8; 32],
        prev_hash: [u8; 32],
    ) -> Result<(), Found> {
        let seq = rec.seq;
        let payload = rec.payload.as_object().unwrap_or_default();
        record::check_members(
            payload,
            &SEAL_PAYLOAD_MEMBERS,
            &SEAL_PAYLOAD_MEMBERS,
            "seal payload",
        )
        .map_err(|s| Found {
            reason: ProblemReason::Schema,
            detail: s.detail,
            expected: None,
            found: s.member.map(|x| format!("payload.{x}")),
        })?;
        let first_seq = json::get(payload, "first_seq")
            .and_then(as_seq)
            .ok_or_else(|| {
                found(
                    ProblemReason::Schema,
                    "payload.first_seq must be an integer in 0..2^53-1",
                )
            })?;
        let key_id = json::get(payload, "key_id")
            .and_then(Value::as_str)
            .filter(|s| is_lower_hex(s, 16))
            .ok_or_else(|| {
                found(
                    ProblemReason::Schema,
                    "payload.key_id must be 16 lowercase hex chars",
                )
            })?;
        let prev_seal_hex = json::get(payload, "prev_seal")
            .and_then(Value::as_str)
            .filter(|s| is_lower_hex(s, 64))
            .ok_or_else(|| {
                found(
                    ProblemReason::Schema,
                    "payload.prev_seal must be 64 lowercase hex chars",
                )
            })?;
        let signature_hex = rec.signature.unwrap_or_default();
        let signature = hex_decode::<64>(signature_hex).ok_or_else(|| {
            found(
                ProblemReason::Schema,
                "signature must be 128 lowercase hex chars",
            )
        })?;

        let want_first = self.last_seal_seq.map_or(0, |s| s + 1);
        if self.events == 0 || self.next_seq <= want_first {
            return Err(mismatch(
                ProblemReason::SealCoverage,
                "the seal covers no event that is not already covered",
                format!("an event with seq {want_first} before the seal"),
                format!("seal at seq {seq}"),
            ));
        }
        let last_event = self.next_seq - 1;
        if seq != last_event {
            return Err(mismatch(
                ProblemReason::SealCoverage,
                format!("the seal's seq must be the seq of the last event ({last_event})"),
                last_event.to_string(),
                seq.to_string(),
            ));
        }
        if first_seq != want_first {
            return Err(mismatch(
                ProblemReason::SealCoverage,
                format!("payload.first_seq must follow the previous seal (seq {want_first})"),
                want_first.to_string(),
                first_seq.to_string(),
            ));
        }
        if prev_hash != self.last_event_hash {
            return Err(mismatch(
                ProblemReason::SealPrevHash,
                format!("the seal's prev_hash is not the hash of the event at seq {seq}"),
                hex_encode(&self.last_event_hash),
                hex_encode(&prev_hash),
            ));
        }
        if hex_decode::<32>(prev_seal_hex) != Some(self.prev_seal) {
            return Err(mismatch(
                ProblemReason::SealLink,
                "payload.prev_seal is not the hash of the previous seal",
                hex_encode(&self.prev_seal),
                prev_seal_hex.to_owned(),
            ));
        }
        let Some(vk) = self.keys.get(key_id) else {
            return Err(mismatch(
                ProblemReason::UnknownKey,
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
                ProblemReason::BadSignature,
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
