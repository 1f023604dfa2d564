//! Builders of valid events, batches and chains for the tests.
#![allow(dead_code)]

use std::path::PathBuf;

use hashcore::{canonicalize, sha256_hex, Signer};

pub const SID: &str = "0b6c5b4e-8f0a-4c1e-9d2b-3a4f5e6d7c8b";
pub const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";
pub const TS: &str = "2024-02-29T23:59:60.123456Z";

/// The conformance vectors copied into the repository; a missing folder fails the test.
pub fn jcs_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/conformance/jcs"
    ));
    assert!(
        dir.is_dir(),
        "conformance vectors not found at {}",
        dir.display()
    );
    dir
}

/// One event with a correct hash, as a JSON object text (members in any order).
pub fn event(seq: u64, prev: &str, payload: &str) -> (String, String) {
    let body = format!(
        r#"{{"session_id":"{SID}","seq":{seq},"kind":"tool.call","ts":"{TS}","payload":{payload},"prev_hash":"{prev}""#
    );
    let hashed = canonicalize(format!("{body}}}").as_bytes()).expect("valid event");
    let hash = sha256_hex(&hashed);
    (format!(r#"{body},"hash":"{hash}"}}"#), hash)
}

/// `n` linked events from `first` (prev = `prev`), with their hashes.
pub fn events(first: u64, n: u64, prev: &str) -> (Vec<String>, Vec<String>) {
    let mut prev = prev.to_owned();
    let mut texts = Vec::new();
    let mut hashes = Vec::new();
    for seq in first..first + n {
        let (t, h) = event(
            seq,
            &prev,
            &format!(r#"{{"n":{seq},"msg":"hello ☃ {seq}"}}"#),
        );
        texts.push(t);
        prev = h.clone();
        hashes.push(h);
    }
    (texts, hashes)
}

pub fn batch_body(events: &[String]) -> Vec<u8> {
    format!(r#"{{"events":[{}]}}"#, events.join(",")).into_bytes()
}

pub fn signer(byte: u8) -> Signer {
    Signer::from_seed(&[byte; 32]).expect("seed")
}

/// A valid chain of replay lines: batches of the given sizes, each followed by its seal.
pub fn chain(signer: &Signer, sizes: &[u64]) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut prev = ZERO.to_owned();
    let mut prev_seal = ZERO.to_owned();
    let mut next = 0;
    for &n in sizes {
        let (texts, hashes) = events(next, n, &prev);
        let batch = hashcore::verify_batch(&batch_body(&texts), 1000).expect("valid batch");
        lines.extend(batch.records().map(<[u8]>::to_vec));
        prev = hashes.last().cloned().unwrap_or_default();
        let seal = signer
            .seal(
                SID,
                next + n - 1,
                next,
                &prev_seal,
                &prev,
                "2024-05-01T12:00:00.000001Z",
            )
            .expect("seal");
        lines.push(seal.record.clone());
        prev_seal = seal.hash;
        next += n;
    }
    lines
}
