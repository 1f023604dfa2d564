"""Seals (checked with the cryptography package) and the auditor's chain check."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import hashcore

from ..chain import OTHER_SID, SEAL_TS, SID, ZERO, body_of, make_event
from .sealed import make_chain

A = hashcore.Signer(bytes(range(32)))
B = hashcore.Signer(b"\x07" * 32)


def keys(*signers: hashcore.Signer) -> dict[str, bytes]:
    return {s.key_id: s.public_key for s in signers}


def test_seal_verifies_with_cryptography() -> None:
    head = "cd" * 32
    seal = A.seal(SID, 9, 0, ZERO, head, SEAL_TS)
    record = json.loads(seal.record)
    assert list(record) == sorted(record)
    assert seal.record == rfc8785.dumps(record)
    assert record == {
        "session_id": SID,
        "seq": 9,
        "kind": "CHAIN_SEAL",
        "ts": SEAL_TS,
        "payload": {"first_seq": 0, "prev_seal": ZERO, "key_id": A.key_id},
        "prev_hash": head,
        "hash": seal.hash,
        "signature": seal.signature,
    }
    hashed = {k: v for k, v in record.items() if k not in ("hash", "signature")}
    assert seal.hash == hashlib.sha256(rfc8785.dumps(hashed)).hexdigest()
    Ed25519PublicKey.from_public_bytes(A.public_key).verify(
        bytes.fromhex(seal.signature), bytes.fromhex(seal.hash)
    )
    assert A.key_id == hashlib.sha256(A.public_key).hexdigest()[:16]
    assert (seal.seq, seal.first_seq, seal.ts) == (9, 0, SEAL_TS)


def test_pem_round_trip_and_interop() -> None:
    pem = A.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert hashcore.Signer.from_pem(pem).public_key == A.public_key
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    raw = loaded.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw == A.public_key
    theirs = Ed25519PrivateKey.generate()
    their_pem = theirs.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    signer = hashcore.Signer.from_pem(their_pem)
    assert signer.public_key == theirs.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


@pytest.mark.parametrize("seed", [b"", b"\x00" * 31, b"\x00" * 33])
def test_bad_seed(seed: bytes) -> None:
    with pytest.raises(ValueError, match="32"):
        hashcore.Signer(seed)


def test_bad_pem_and_seal_arguments() -> None:
    with pytest.raises(ValueError, match="PKCS#8"):
        hashcore.Signer.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="first_seq"):
        A.seal(SID, 1, 2, ZERO, ZERO, SEAL_TS)  # first_seq > seq
    with pytest.raises(ValueError, match="session_id"):
        A.seal("not-a-uuid", 1, 0, ZERO, ZERO, SEAL_TS)
    with pytest.raises(ValueError, match="ts must be"):
        A.seal(SID, 1, 0, ZERO, ZERO, "yesterday")


def test_valid_multi_batch_chain() -> None:
    lines = make_chain(A, [3, 1, 5])
    report = hashcore.verify_chain(lines, keys(A))
    assert report.ok, report.problem
    assert report.problem is None
    assert (report.records, report.events, report.seals) == (12, 9, 3)
    assert report.keys_used == [A.key_id]


def test_streaming_interfaces_agree() -> None:
    lines = make_chain(A, [2, 2])

    def lazily() -> Iterator[bytes]:
        yield from lines

    assert hashcore.verify_chain(lazily(), keys(A, B)).ok
    verifier = hashcore.ChainVerifier(keys(A))
    verifier.feed(lines[:3])
    assert verifier.records == 3
    verifier.feed_ndjson(b"\n".join(lines[3:]) + b"\n\n")
    report = verifier.finish()
    assert report.ok
    assert report.records == 6


def test_large_chain_streams() -> None:
    lines = make_chain(A, [500] * 6)
    report = hashcore.verify_chain(iter(lines), keys(A))
    assert report.ok
    assert report.events == 3000


def test_large_doubles_are_valid() -> None:
    event = make_event(0, ZERO, {"big": 3.749565844198488e17})
    batch = hashcore.verify_batch(body_of([event], ensure_ascii=False), 10)
    seal = A.seal(SID, 0, 0, ZERO, batch.last_hash, SEAL_TS)
    assert b"374956584419848800" in batch.records[0]
    assert hashcore.verify_chain([*batch.records, seal.record], keys(A)).ok


def problem(lines: list[bytes], *signers: hashcore.Signer) -> hashcore.Problem:
    report = hashcore.verify_chain(lines, keys(*signers))
    assert not report.ok
    assert report.problem is not None
    return report.problem


def test_changed_payload() -> None:
    lines = make_chain(A, [3, 2])
    lines[1] = lines[1].replace(b"hello", b"jello")
    p = problem(lines, A)
    assert (p.reason, p.line, p.seq, p.kind) == ("hash_mismatch", 2, 1, "tool.call")
    assert p.expected is not None
    assert p.found is not None
    assert p.expected != p.found


def test_removed_event() -> None:
    lines = make_chain(A, [3, 2])
    del lines[1]
    p = problem(lines, A)
    assert (p.reason, p.line, p.expected, p.found) == ("seq_gap", 2, "1", "2")


def test_removed_last_event_of_a_batch() -> None:
    lines = make_chain(A, [3, 2])
    del lines[2]
    assert problem(lines, A).reason == "seal_coverage"


def test_reordered_pair() -> None:
    lines = make_chain(A, [3, 2])
    lines[1], lines[2] = lines[2], lines[1]
    assert (problem(lines, A).reason, problem(lines, A).line) == ("seq_gap", 2)


def test_forged_signature() -> None:
    lines = make_chain(A, [3, 2])
    seal = json.loads(lines[3])
    forged = B.seal(SID, 2, 0, ZERO, seal["prev_hash"], SEAL_TS)
    record = json.loads(forged.record)
    record["payload"]["key_id"] = A.key_id  # claims A's key, signed by B
    record["hash"] = hashlib.sha256(
        rfc8785.dumps({k: v for k, v in record.items() if k not in ("hash", "signature")})
    ).hexdigest()
    lines[3] = rfc8785.dumps(record)
    p = problem(lines, A, B)
    assert (p.reason, p.line) == ("bad_signature", 4)


def test_seal_from_unknown_key() -> None:
    lines = make_chain(B, [2])
    p = problem(lines, A)
    assert (p.reason, p.found) == ("unknown_key", B.key_id)


def test_end_conditions() -> None:
    lines = make_chain(A, [2, 2])
    assert problem(lines[:-1], A).reason == "last_not_seal"
    assert problem([], A).reason == "empty"


def test_mixed_sessions() -> None:
    lines = make_chain(A, [2]) + make_chain(A, [1], sid=OTHER_SID)
    p = problem(lines, A)
    assert (p.reason, p.line, p.expected, p.found) == ("mixed_sessions", 4, SID, OTHER_SID)


def test_not_canonical_line() -> None:
    lines = make_chain(A, [2])
    lines[0] = json.dumps(json.loads(lines[0])).encode()
    assert (problem(lines, A).reason, problem(lines, A).line) == ("not_canonical", 1)


def test_broken_seal_chain() -> None:
    lines = make_chain(A, [2, 2])
    second = json.loads(lines[5])
    lines[5] = A.seal(SID, 3, 2, ZERO, second["prev_hash"], SEAL_TS).record
    assert problem(lines, A).reason == "seal_link"
    lines[5] = A.seal(SID, 3, 2, second["payload"]["prev_seal"], "ee" * 32, SEAL_TS).record
    assert problem(lines, A).reason == "seal_prev_hash"


def test_bad_lines() -> None:
    lines = make_chain(A, [2])
    assert problem([b"{", *lines], A).reason == "malformed_json"
    assert problem([b'{"a":1,"a":2}', *lines], A).reason == "json_rule"
    assert problem([b'{"a":1}', *lines], A).reason == "schema"


def test_bad_key_mapping() -> None:
    with pytest.raises(ValueError, match="does not match"):
        hashcore.ChainVerifier({"0" * 16: A.public_key})
    with pytest.raises(ValueError, match="32 bytes"):
        hashcore.ChainVerifier({A.key_id: b"short"})
