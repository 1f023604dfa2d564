//! Verification of an ingest body `{"events": [...]}` (PROTOCOL §1-§3, step 2-3).

use crate::error::{BatchError, Error, JsonError, Rule, Segment};
use crate::json::{self, Value};
use crate::record::{self, hex_decode, hex_encode, EVENT_MEMBERS, ZERO_HASH};

/// A batch that passed every check that needs no stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub session_id: String,
    pub first_prev_hash: String,
    pub seqs: Vec<u64>,
    pub kinds: Vec<String>,
    pub ts: Vec<String>,
    pub hashes: Vec<[u8; 32]>,
    /// JCS bytes of every full event, back to back; `record_ends[i]` ends event i.
    pub records: Vec<u8>,
    pub record_ends: Vec<usize>,
}

impl Batch {
    pub fn count(&self) -> usize {
        self.seqs.len()
    }

    pub fn first_seq(&self) -> u64 {
        self.seqs.first().copied().unwrap_or(0)
    }

    pub fn last_seq(&self) -> u64 {
        self.seqs.last().copied().unwrap_or(0)
    }

    pub fn last_hash(&self) -> String {
        self.hashes
            .last()
            .map(|h| hex_encode(h))
            .unwrap_or_default()
    }

    /// JCS bytes of event `i` (with `hash`).
    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.record_ends[i - 1] };
        &self.records[start..self.record_ends[i]]
    }

    pub fn records(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        (0..self.count()).map(|i| self.record(i))
    }
}

fn fail(
    code: &'static str,
    index: Option<usize>,
    member: Option<&str>,
    detail: String,
) -> Box<BatchError> {
    Box::new(BatchError {
        code,
        index,
        member: member.map(str::to_owned),
        detail,
        expected: None,
        got: None,
    })
}

fn from_json_error(e: JsonError) -> Box<BatchError> {
    let (index, member) = match e.segments.as_slice() {
        [Segment::Key(k), Segment::Index(i), rest @ ..] if k == "events" => (
            Some(*i),
            match rest.first() {
                Some(Segment::Key(m)) => Some(m.clone()),
                _ => None,
            },
        ),
        _ => (None, None),
    };
    let code = if e.rule == Rule::Malformed {
        "malformed_json"
    } else {
        "json_rule"
    };
    Box::new(BatchError {
        code,
        index,
        member,
        detail: e.to_string(),
        expected: None,
        got: None,
    })
}

/// Parses and checks a batch body; see the crate README / PROTOCOL §3 for the order.
pub fn verify_batch(body: &[u8], max_events: usize) -> Result<Batch, Error> {
    check_batch(body, max_events).map_err(Error::from)
}

fn check_batch(body: &[u8], max_events: usize) -> Result<Batch, Box<BatchError>> {
    // Payloads (depth 4) are only serialized: keep them as JCS bytes, not trees.
    let (root, canon) = json::parse_shared(body, true, 4).map_err(from_json_error)?;
    let top = root.as_object().ok_or_else(|| {
        fail(
            "schema",
            None,
            None,
            format!("body must be an object, got {}", root.type_name()),
        )
    })?;
    if let Some((k, _)) = top.iter().find(|(k, _)| k.as_str() != "events") {
        return Err(fail(
            "schema",
            None,
            Some(k.as_str()),
            format!("unknown member {:?} in body", k.as_str()),
        ));
    }
    let events = match top.first() {
        Some((_, Value::Array(events))) => events,
        Some((_, other)) => {
            return Err(fail(
                "schema",
                None,
                Some("events"),
                format!("events must be an array, got {}", other.type_name()),
            ))
        }
        None => {
            return Err(fail(
                "schema",
                None,
                Some("events"),
                "missing member \"events\" in body".into(),
            ))
        }
    };
    if events.is_empty() {
        return Err(fail(
            "schema",
            None,
            Some("events"),
            "events is empty".into(),
        ));
    }
    if events.len() > max_events {
        return Err(fail(
            "too_large",
            None,
            Some("events"),
            format!("{} events, at most {max_events} allowed", events.len()),
        ));
    }

    let mut objects = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let members = ev.as_object().ok_or_else(|| {
            fail(
                "schema",
                Some(i),
                None,
                format!("event {i} must be an object, got {}", ev.type_name()),
            )
        })?;
        record::check_members(members, &EVENT_MEMBERS, &record::CHECK_ORDER, "event")
            .and_then(|()| record::check_fields(members, false))
            .map_err(|s| {
                Box::new(BatchError {
                    code: s.code,
                    index: Some(i),
                    detail: format!("event {i}: {}", s.detail),
                    member: s.member,
                    expected: None,
                    got: None,
                })
            })?;
        objects.push(members);
    }

    let n = objects.len();
    let mut batch = Batch {
        session_id: String::new(),
        first_prev_hash: String::new(),
        seqs: Vec::with_capacity(n),
        kinds: Vec::with_capacity(n),
        ts: Vec::with_capacity(n),
        hashes: Vec::with_capacity(n),
        records: Vec::with_capacity(body.len() + 16 * n),
        record_ends: Vec::with_capacity(n),
    };
    let mut first_seq = 0u64;
    let mut prev_hash = [0u8; 32];
    for (i, m) in objects.iter().enumerate() {
        // Sorted members: hash, kind, payload, prev_hash, seq, session_id, ts.
        let text = |j: usize| m[j].1.as_str().unwrap_or_default();
        let given_hex = text(0);
        let given_prev = text(3);
        let seq = record::as_seq(&m[4].1).unwrap_or(0);
        let session_id = text(5);
        if i == 0 {
            first_seq = seq;
            batch.session_id = session_id.to_owned();
            batch.first_prev_hash = given_prev.to_owned();
        } else if session_id != batch.session_id {
            return Err(Box::new(BatchError {
                code: "mixed_sessions",
                index: Some(i),
                member: Some("session_id".into()),
                detail: format!("event {i} belongs to another session than event 0"),
                expected: Some(batch.session_id.clone()),
                got: Some(session_id.to_owned()),
            }));
        }
        let want_seq = first_seq + i as u64;
        if seq != want_seq {
            return Err(Box::new(BatchError {
                code: "seq_not_contiguous",
                index: Some(i),
                member: Some("seq".into()),
                detail: format!("event {i} has seq {seq}, expected {want_seq}"),
                expected: Some(want_seq.to_string()),
                got: Some(seq.to_string()),
            }));
        }
        // The record is `{"hash":"<given>",` + the hashed object minus its `{`:
        // write it once and hash `{` + its tail in place.
        let rec_start = batch.records.len();
        batch.records.extend_from_slice(b"{\"hash\":\"");
        batch.records.extend_from_slice(given_hex.as_bytes());
        batch.records.extend_from_slice(b"\",");
        let tail = batch.records.len();
        json::write_members_tail(&mut batch.records, &m[1..], &canon);
        let digest = record::sha256_parts(b"{", &batch.records[tail..]);
        let given = hex_decode::<32>(given_hex).unwrap_or_default();
        if digest != given {
            return Err(Box::new(BatchError {
                code: "hash_mismatch",
                index: Some(i),
                member: Some("hash".into()),
                detail: format!("event {i}: hash does not match its content"),
                expected: Some(hex_encode(&digest)),
                got: Some(given_hex.to_owned()),
            }));
        }
        let link_ok = if i > 0 {
            hex_decode::<32>(given_prev) == Some(prev_hash)
        } else {
            seq != 0 || given_prev == ZERO_HASH
        };
        if !link_ok {
            let expected = if i > 0 {
                hex_encode(&prev_hash)
            } else {
                ZERO_HASH.to_owned()
            };
            return Err(Box::new(BatchError {
                code: "broken_link",
                index: Some(i),
                member: Some("prev_hash".into()),
                detail: format!("event {i}: prev_hash does not match the previous hash"),
                expected: Some(expected),
                got: Some(given_prev.to_owned()),
            }));
        }
        prev_hash = digest;
        debug_assert!(batch.records.len() > rec_start);
        batch.record_ends.push(batch.records.len());
        batch.seqs.push(seq);
        batch.kinds.push(text(1).to_owned());
        batch.ts.push(text(6).to_owned());
        batch.hashes.push(digest);
    }
    Ok(batch)
}
