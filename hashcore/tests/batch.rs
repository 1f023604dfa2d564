//! verify_batch: every code, in the documented order.

mod common;

use common::{batch_body, event, events, SID, ZERO};
use hashcore::{verify_batch, BatchCode, Error};

fn code_of(body: &[u8]) -> (String, Option<usize>, Option<String>) {
    match verify_batch(body, 1000) {
        Err(Error::Batch(b)) => (b.code.as_str().to_owned(), b.index, b.member),
        Err(other) => panic!("not a batch error: {other}"),
        Ok(_) => panic!("accepted {}", String::from_utf8_lossy(body)),
    }
}

fn replace_in(texts: &[String], i: usize, from: &str, to: &str) -> Vec<u8> {
    let mut t = texts.to_vec();
    assert!(t[i].contains(from), "{from} not in event {i}");
    t[i] = t[i].replacen(from, to, 1);
    batch_body(&t)
}

#[test]
fn valid_batch_gives_records_and_hashes() {
    let (texts, hashes) = events(0, 5, ZERO);
    let b = verify_batch(&batch_body(&texts), 5).expect("valid");
    assert_eq!(b.count(), 5);
    assert_eq!((b.first_seq(), b.last_seq()), (0, 4));
    assert_eq!(b.session_id, SID);
    assert_eq!(b.first_prev_hash, ZERO);
    assert_eq!(b.last_hash(), hashes[4]);
    for (i, rec) in b.records().enumerate() {
        assert_eq!(
            rec,
            hashcore::canonicalize(texts[i].as_bytes()).expect("jcs")
        );
        assert_eq!(hashcore::record::hex_encode(&b.hashes[i]), hashes[i]);
    }
    // A batch may start anywhere; its first prev_hash is checked later, against the head.
    let (texts, _) = events(7, 2, &"ab".repeat(32));
    assert_eq!(
        verify_batch(&batch_body(&texts), 10)
            .expect("valid")
            .first_seq(),
        7
    );
}

#[test]
fn parse_errors() {
    assert_eq!(code_of(b"{\"events\":[").0, "malformed_json");
    let (texts, _) = events(0, 3, ZERO);
    let dup = replace_in(&texts, 2, r#""n":2"#, r#""n":2,"n":3"#);
    assert_eq!(
        code_of(&dup),
        ("json_rule".into(), Some(2), Some("payload".into()))
    );
    let deep = replace_in(
        &texts,
        1,
        r#""n":1"#,
        &format!(r#""n":{}1{}"#, "[".repeat(62), "]".repeat(62)),
    );
    assert_eq!(
        code_of(&deep),
        ("json_rule".into(), Some(1), Some("payload".into()))
    );
    let big = replace_in(&texts, 0, r#""n":0"#, r#""n":9007199254740993"#);
    assert_eq!(code_of(&big).0, "json_rule");
}

/// PROTOCOL §2: above 2^53-1, an integer literal passes only as JCS writes its double.
#[test]
fn large_integer_literals() {
    let overflow = format!("1{}", "0".repeat(400));
    for n in [
        "9007199254740993",
        "-9007199254740993",
        "1152921504606846976",
        "-1152921504606846976",
        "123456789012345678901234567890",
        &overflow,
    ] {
        let (texts, _) = events(0, 1, ZERO);
        let body = replace_in(&texts, 0, r#""n":0"#, &format!(r#""n":{n}"#));
        assert_eq!(
            code_of(&body),
            ("json_rule".into(), Some(0), Some("payload".into())),
            "{n}"
        );
    }
    for n in [
        "374956584419848800",
        "9007199254740992",
        "-9007199254740992",
        "-374956584419848800",
        "100000000000000000000",
    ] {
        let (text, _) = event(0, ZERO, &format!(r#"{{"n":{n}}}"#));
        let b = verify_batch(&batch_body(&[text]), 1).unwrap_or_else(|e| panic!("{n}: {e}"));
        let record = String::from_utf8(b.record(0).to_vec()).expect("utf8");
        assert!(record.contains(&format!(r#"{{"n":{n}}}"#)), "{record}");
    }
}

#[test]
fn schema_errors() {
    let (texts, _) = events(0, 3, ZERO);
    assert_eq!(code_of(b"[]").0, "schema");
    assert_eq!(
        code_of(br#"{"events":[],"x":1}"#),
        ("schema".into(), None, Some("x".into()))
    );
    assert_eq!(code_of(br#"{"events":{}}"#).0, "schema");
    assert_eq!(code_of(br#"{"events":[]}"#).0, "schema");
    assert_eq!(code_of(br#"{}"#).0, "schema");
    let body = batch_body(&texts);
    assert!(
        matches!(verify_batch(&body, 2), Err(Error::Batch(b)) if b.code == BatchCode::TooLarge)
    );
    assert_eq!(
        code_of(&batch_body(&["1".into()])),
        ("schema".into(), Some(0), None)
    );

    let cases: &[(&str, &str, &str)] = &[
        (
            r#""kind":"tool.call""#,
            r#""kind":"tool.call","extra":1"#,
            "extra",
        ),
        (r#""kind":"tool.call","#, "", "kind"),
        (SID, "0B6C5B4E-8F0A-4C1E-9D2B-3A4F5E6D7C8B", "session_id"),
        (SID, "0b6c5b4e8f0a4c1e9d2b3a4f5e6d7c8b", "session_id"),
        (r#""seq":1"#, r#""seq":1.5"#, "seq"),
        (r#""seq":1"#, r#""seq":"1""#, "seq"),
        (r#""kind":"tool.call""#, r#""kind":"""#, "kind"),
        (r#""kind":"tool.call""#, r#""kind":"tool call""#, "kind"),
        (
            r#""ts":"2024-02-29T23:59:60.123456Z""#,
            r#""ts":"2023-02-29T00:00:00Z""#,
            "ts",
        ),
        (
            r#""ts":"2024-02-29T23:59:60.123456Z""#,
            r#""ts":"2024-01-01T24:00:00Z""#,
            "ts",
        ),
        (
            r#""ts":"2024-02-29T23:59:60.123456Z""#,
            r#""ts":"2024-01-01T00:00:00.1234567890Z""#,
            "ts",
        ),
        (
            r#""ts":"2024-02-29T23:59:60.123456Z""#,
            r#""ts":"2024-01-01T00:00:00+00:00""#,
            "ts",
        ),
        (r#""payload":{"#, r#""payload":[{"#, "payload"),
        (r#""hash":""#, r#""hash":"X"#, "hash"),
    ];
    for (from, to, member) in cases {
        let body = if *from == r#""payload":{"# {
            let t =
                texts[1]
                    .replacen(from, to, 1)
                    .replacen("},\"prev_hash\"", "}],\"prev_hash\"", 1);
            batch_body(&[texts[0].clone(), t, texts[2].clone()])
        } else {
            replace_in(&texts, 1, from, to)
        };
        assert_eq!(
            code_of(&body),
            ("schema".into(), Some(1), Some((*member).into())),
            "{from} -> {to}"
        );
    }
    let reserved = replace_in(&texts, 1, r#""kind":"tool.call""#, r#""kind":"CHAIN_SEAL""#);
    assert_eq!(
        code_of(&reserved),
        ("reserved_kind".into(), Some(1), Some("kind".into()))
    );
}

#[test]
fn consistency_errors() {
    let (texts, hashes) = events(0, 4, ZERO);
    // Another session, with a correct hash of its own.
    let other = texts[2].replacen(SID, "11111111-2222-3333-4444-555555555555", 1);
    let (mixed, _) = {
        let v = hashcore::json::parse(other.as_bytes()).expect("json");
        let m = v.as_object().expect("object");
        let mut out = Vec::new();
        hashcore::json::write_members(&mut out, &m[1..]);
        let h = hashcore::sha256_hex(&out);
        (other.replacen(&hashes[2], &h, 1), h)
    };
    let body = batch_body(&[texts[0].clone(), texts[1].clone(), mixed, texts[3].clone()]);
    assert_eq!(
        code_of(&body),
        ("mixed_sessions".into(), Some(2), Some("session_id".into()))
    );

    let gap = batch_body(&[texts[0].clone(), texts[2].clone()]);
    assert_eq!(
        code_of(&gap),
        ("seq_not_contiguous".into(), Some(1), Some("seq".into()))
    );

    let tampered = replace_in(&texts, 3, "hello", "hellO");
    match verify_batch(&tampered, 10) {
        Err(Error::Batch(b)) => {
            assert_eq!((b.code, b.index), (BatchCode::HashMismatch, Some(3)));
            assert_eq!(b.got.as_deref(), Some(hashes[3].as_str()));
            assert_ne!(b.expected.as_deref(), Some(hashes[3].as_str()));
        }
        other => panic!("{other:?}"),
    }

    // A correctly hashed event whose prev_hash points elsewhere.
    let (forged, _) = event(2, &"ab".repeat(32), r#"{"n":2}"#);
    let body = batch_body(&[texts[0].clone(), texts[1].clone(), forged]);
    match verify_batch(&body, 10) {
        Err(Error::Batch(b)) => {
            assert_eq!((b.code, b.index), (BatchCode::BrokenLink, Some(2)));
            assert_eq!(b.expected.as_deref(), Some(hashes[1].as_str()));
        }
        other => panic!("{other:?}"),
    }
    let (first, _) = event(0, &"ab".repeat(32), r#"{}"#);
    assert_eq!(code_of(&batch_body(&[first])).0, "broken_link");
}

#[test]
fn code_lists_are_unique() {
    use hashcore::ProblemReason;
    let batch: Vec<&str> = BatchCode::ALL.iter().map(|c| c.as_str()).collect();
    let chain: Vec<&str> = ProblemReason::ALL.iter().map(|r| r.as_str()).collect();
    for codes in [batch, chain] {
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len(), "{codes:?}");
    }
}
