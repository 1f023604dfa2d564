//! Seals and the streaming chain check.

mod common;

use common::{chain, signer, SID, ZERO};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hashcore::{ChainReport, ChainVerifier, Signer};

fn keys(signers: &[&Signer]) -> Vec<(String, Vec<u8>)> {
    signers
        .iter()
        .map(|s| (s.key_id().to_owned(), s.public_key().to_vec()))
        .collect()
}

fn check(lines: &[Vec<u8>], signers: &[&Signer]) -> ChainReport {
    let mut v = ChainVerifier::new(keys(signers)).expect("keys");
    for l in lines {
        v.feed(l);
    }
    v.finish()
}

fn reason(lines: &[Vec<u8>], signers: &[&Signer]) -> (String, u64) {
    let r = check(lines, signers);
    let p = r.problem.unwrap_or_else(|| panic!("chain accepted"));
    assert!(!r.ok);
    (p.reason.as_str().to_owned(), p.line)
}

#[test]
fn seal_signature_verifies_independently() {
    let s = signer(7);
    let head = "cd".repeat(32);
    let seal = s
        .seal(SID, 9, 0, ZERO, &head, "2024-05-01T12:00:00.000001Z")
        .expect("seal");
    let vk = VerifyingKey::from_bytes(&s.public_key()).expect("key");
    let digest = hashcore::record::hex_decode::<32>(&seal.hash).expect("hex");
    let sig =
        Signature::from_bytes(&hashcore::record::hex_decode::<64>(&seal.signature).expect("hex"));
    vk.verify(&digest, &sig).expect("signature");
    let text = String::from_utf8(seal.record.clone()).expect("utf8");
    assert!(text.starts_with(&format!(r#"{{"hash":"{}","kind":"CHAIN_SEAL","payload":{{"first_seq":0,"key_id":"{}","prev_seal":"{ZERO}"}},"prev_hash":"{head}","seq":9,"#, seal.hash, s.key_id())));
    assert_eq!(
        hashcore::canonicalize(&seal.record).expect("jcs"),
        seal.record
    );
    // key_id = first 16 hex of sha256(public key)
    assert_eq!(s.key_id(), &hashcore::sha256_hex(&s.public_key())[..16]);
    // PEM round trip
    let back = Signer::from_pem(s.to_pem().expect("pem").as_bytes()).expect("from pem");
    assert_eq!(back.public_key(), s.public_key());
    assert!(Signer::from_seed(&[1; 31]).is_err());
    assert!(s
        .seal(SID, 1, 2, ZERO, &head, "2024-05-01T12:00:00Z")
        .is_err());
}

#[test]
fn valid_chain_passes_and_streams() {
    let (a, b) = (signer(1), signer(2));
    let mut lines = chain(&a, &[3, 1]);
    // A later batch sealed by a rotated key.
    let r = check(&lines, &[&a]);
    assert!(r.ok, "{:?}", r.problem);
    assert_eq!((r.records, r.events, r.seals), (6, 4, 2));
    assert_eq!(r.keys_used, vec![a.key_id().to_owned()]);

    let mut ndjson = lines.join(&b'\n');
    ndjson.extend_from_slice(b"\n\n");
    let mut v = ChainVerifier::new(keys(&[&a, &b])).expect("keys");
    v.feed_ndjson(&ndjson);
    assert!(v.finish().ok);
    assert_eq!(v.records(), 6);

    // The second seal re-signed by another known key is fine too.
    let second = seal_parts(&lines, 5, 4);
    lines[5] = b
        .seal(SID, 3, 3, &second.0, &second.1, "2024-05-01T12:00:01Z")
        .expect("seal")
        .record;
    let r = check(&lines, &[&a, &b]);
    assert!(r.ok, "{:?}", r.problem);
    assert_eq!(r.keys_used.len(), 2);
    lines.truncate(0);
    assert_eq!(reason(&lines, &[&a]).0, "empty");
}

#[test]
fn large_doubles_in_payload_are_valid() {
    let s = signer(3);
    let (texts, _) = {
        let (t, h) = common::event(0, ZERO, r#"{"big":3.749565844198488e17}"#);
        (vec![t], vec![h])
    };
    let batch = hashcore::verify_batch(&common::batch_body(&texts), 10).expect("batch");
    let rec = batch.record(0).to_vec();
    assert!(String::from_utf8_lossy(&rec).contains("374956584419848800"));
    let seal = s
        .seal(
            SID,
            0,
            0,
            ZERO,
            &batch.last_hash(),
            "2024-05-01T12:00:00.000001Z",
        )
        .expect("seal");
    let r = check(&[rec, seal.record], &[&s]);
    assert!(r.ok, "{:?}", r.problem);
}

#[test]
fn tampering_is_caught() {
    let (a, b) = (signer(1), signer(2));
    let lines = chain(&a, &[3, 2]);
    // changed payload
    let mut changed = lines.clone();
    changed[1] = String::from_utf8(changed[1].clone())
        .expect("utf8")
        .replace("hello", "jello")
        .into_bytes();
    assert_eq!(reason(&changed, &[&a]), ("hash_mismatch".into(), 2));
    // removed event
    let mut removed = lines.clone();
    removed.remove(1);
    assert_eq!(reason(&removed, &[&a]), ("seq_gap".into(), 2));
    // reordered pair
    let mut swapped = lines.clone();
    swapped.swap(0, 1);
    assert_eq!(reason(&swapped, &[&a]), ("seq_gap".into(), 1));
    // forged signature: a seal signed by b but claiming a's key_id
    let mut forged = lines.clone();
    let text = String::from_utf8(forged[3].clone()).expect("utf8");
    let sig_at = text.find("\"signature\":\"").expect("sig") + 13;
    let mut bad = text.clone();
    let flip = if &text[sig_at..sig_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    bad.replace_range(sig_at..sig_at + 1, flip);
    forged[3] = bad.into_bytes();
    assert_eq!(reason(&forged, &[&a]), ("bad_signature".into(), 4));
    // unknown key
    assert_eq!(reason(&lines, &[&b]), ("unknown_key".into(), 4));
    // last record not a seal
    let mut cut = lines.clone();
    cut.pop();
    assert_eq!(reason(&cut, &[&a]).0, "last_not_seal");
    // a line that is not its own JCS form
    let mut non_canonical = lines.clone();
    let mut l = non_canonical[0].clone();
    l.push(b' ');
    non_canonical[0] = l;
    assert_eq!(reason(&non_canonical, &[&a]), ("not_canonical".into(), 1));
    // a dropped seal leaves the next seal's first_seq pointing past the last seal
    let mut dropped = lines.clone();
    dropped.remove(3);
    assert_eq!(reason(&dropped, &[&a]).0, "seal_coverage");
    // the verifier keeps the first problem and keeps counting
    let r = check(&changed, &[&a]);
    assert_eq!(r.records, lines.len() as u64);
}

#[test]
fn bad_keys_rejected() {
    let a = signer(1);
    assert!(ChainVerifier::new(vec![(
        "0000000000000000".to_owned(),
        a.public_key().to_vec()
    )])
    .is_err());
    assert!(ChainVerifier::new(vec![(a.key_id().to_owned(), vec![1, 2, 3])]).is_err());
}

/// (prev_seal, head_hash) that the seal at `lines[at]` should carry, `event_line` being its event.
fn seal_parts(lines: &[Vec<u8>], at: usize, event_line: usize) -> (String, String) {
    let hash_of = |l: &[u8]| String::from_utf8_lossy(&l[9..73]).into_owned();
    let prev_seal = lines[..at]
        .iter()
        .rev()
        .find(|l| String::from_utf8_lossy(l).contains("CHAIN_SEAL"))
        .map_or(ZERO.to_owned(), |l| hash_of(l));
    (prev_seal, hash_of(&lines[event_line]))
}

#[test]
fn seal_links_are_checked() {
    let a = signer(1);
    let lines = chain(&a, &[2, 2]);
    let (prev_seal, head) = seal_parts(&lines, 5, 4);
    let ts = "2024-05-01T12:00:00Z";
    let mut wrong_link = lines.clone();
    wrong_link[5] = a.seal(SID, 3, 2, ZERO, &head, ts).expect("seal").record;
    assert_eq!(reason(&wrong_link, &[&a]), ("seal_link".into(), 6));
    let mut wrong_head = lines.clone();
    wrong_head[5] = a
        .seal(SID, 3, 2, &prev_seal, &"ee".repeat(32), ts)
        .expect("seal")
        .record;
    assert_eq!(reason(&wrong_head, &[&a]), ("seal_prev_hash".into(), 6));
    let mut wrong_first = lines.clone();
    wrong_first[5] = a
        .seal(SID, 3, 3, &prev_seal, &head, ts)
        .expect("seal")
        .record;
    assert_eq!(reason(&wrong_first, &[&a]), ("seal_coverage".into(), 6));
    let mut ok = lines.clone();
    ok[5] = a
        .seal(SID, 3, 2, &prev_seal, &head, ts)
        .expect("seal")
        .record;
    assert!(check(&ok, &[&a]).ok);
}
