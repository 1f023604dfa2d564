//! Verification of an ingest body `{"events": [...]}` (PROTOCOL §1-§3, step 2-3).

use crate::error::{BatchCode, BatchError, Error, JsonError, Rule, Segment};
use crate::json::{self, Value};
use crate::record::{self, hex_decode, hex_encode, ZERO_HASH};

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
    code: BatchCode,
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
        BatchCode::MalformedJson
    } else {
        BatchCode::JsonRule
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
            BatchCode::Schema,
            None,
            None,
            format!("body must be an object, got {}", root.type_name()),
        )
    })?;
    if let Some((k, _)) = top.iter().find(|(k, _)| k.as_str() != "events") {
        return Err(fail(
            BatchCode::Schema,
            None,
            Some(k.as_str()),
            format!("unknown member {:?} in body", k.as_str()),
        ));
    }
    let events = match top.first() {
        Some((_, Value::Array(events))) => events,
        Some((_, other)) => {
            return Err(fail(
                BatchCode::Schema,
                None,
                Some("events"),
                format!("events must be an array, got {}", other.type_name()),
            ))
        }
        None => {
            return Err(fail(
                BatchCode::Schema,
                None,
                Some("events"),
                "missing member \"events\" in body".into(),
            ))
        }
    };
    if events.is_empty() {
        return Err(fail(
            BatchCode::Schema,
            None,
            Some("events"),
            "events is empty".into(),
        ));
    }
    if events.len() > max_events {
        return Err(fail(
            BatchCode::TooLarge,
            None,
            Some("events"),
            format!("{} events, at most {max_events} allowed", events.len()),
        ));
    }

    let mut checked = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let members = ev.as_object().ok_or_else(|| {
            fail(
                BatchCode::Schema,
                Some(i),
                None,
                format!("event {i} must be an object, got {}", ev.type_name()),
            )
        })?;
        let view = record::check_record(members, false).map_err(|s| {
            Box::new(BatchError {
                code: s.code.into(),
                index: Some(i),
                detail: format!("event {i}: {}", s.detail),
                member: s.member,
                expected: None,
                got: None,
            })
        })?;
        checked.push(view);
    }

    let n = checked.len();
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
    for (i, ev) in checked.iter().enumerate() {
        let seq = ev.seq;
        if i == 0 {
            first_seq = seq;
            batch.session_id = ev.session_id.to_owned();
            batch.first_prev_hash = ev.prev_hash.to_owned();
        } else if ev.session_id != batch.session_id {
            return Err(Box::new(BatchError {
                code: BatchCode::MixedSessions,
                index: Some(i),
                member: Some("session_id".into()),
                detail: format!("event {i} belongs to another session than event 0"),
                expected: Some(batch.session_id.clone()),
                got: Some(ev.session_id.to_owned()),
            }));
        }
        let want_seq = first_seq + i as u64;
        if seq != want_seq {
            return Err(Box::new(BatchError {
                code: BatchCode::SeqNotContiguous,
                index: Some(i),
                member: Some("seq".into()),
                detail: format!("event {i} has seq {seq}, expected {want_seq}"),
                expected: Some(want_seq.to_string()),
                got: Some(seq.to_string()),
            }));
        }
        // `hash` sorts before every other member, so the record is
        // `{"hash":"<given>",` + the hashed object minus its `{`: write it
        // once and hash `{` + its tail in place.
        let rec_start = batch.records.len();
        batch.records.extend_from_slice(b"{\"hash\":\"");
        batch.records.extend_from_slice(ev.hash.as_bytes());
        batch.records.extend_from_slice(b"\",");
        let tail = batch.records.len();
        ev.write_hashed_members(&mut batch.records, &canon);
        batch.records.push(b'}');
        let digest = record::sha256_parts(b"{", &batch.records[tail..]);
        let given = hex_decode::<32>(ev.hash).unwrap_or_default();
        if digest != given {
            return Err(Box::new(BatchError {
                code: BatchCode::HashMismatch,
                index: Some(i),
                member: Some("hash".into()),
                detail: format!("event {i}: hash does not match its content"),
                expected: Some(hex_encode(&digest)),
                got: Some(ev.hash.to_owned()),
            }));
        }
        let link_ok = if i > 0 {
            hex_decode::<32>(ev.prev_hash) == Some(prev_hash)
        } else {
            seq != 0 || ev.prev_hash == ZERO_HASH
        };
        if !link_ok {
            let expected = if i > 0 {
                hex_encode(&prev_hash)
            } else {
                ZERO_HASH.to_owned()
            };
            return Err(Box::new(BatchError {
                code: BatchCode::BrokenLink,
                index: Some(i),
                member: Some("prev_hash".into()),
                detail: format!("event {i}: prev_hash does not match the previous hash"),
                expected: Some(expected),
                got: Some(ev.prev_hash.to_owned()),
            }));
        }
        prev_hash = digest;
        debug_assert!(batch.records.len() > rec_start);
        batch.record_ends.push(batch.records.len());
        batch.seqs.push(seq);
        batch.kinds.push(ev.kind.to_owned());
        batch.ts.push(ev.ts.to_owned());
        batch.hashes.push(digest);
    }
    Ok(batch)
}
