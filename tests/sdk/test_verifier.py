"""The offline verifier of the client package (pure Python) reports exactly
what hashcore's ChainVerifier reports, on valid and tampered chains."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from agent_chain.canonical import jcs_python, normalize_payload
from agent_chain.records import event_line, hashed_bytes
from agent_chain.verifier import ChainVerifier

import hashcore

SID = "0b6c5b4e-8f0a-4c1e-9d2b-3a4f5e6d7c8b"
TS = "2026-01-15T09:30:00.250Z"
SIGNER = hashcore.Signer(bytes(range(32)))
KEYS = {SIGNER.key_id: SIGNER.public_key}


def chain(n: int = 7, batch: int = 3, sid: str = SID) -> list[bytes]:
    """`n` events sealed in batches of `batch`, as replay returns them."""
    lines: list[bytes] = []
    prev, prev_seal, first = "0" * 64, "0" * 64, 0
    for seq in range(n):
        payload = normalize_payload({"seq": seq, "big": 374956584419848800, "s": "ü\n"})
        hashed = hashed_bytes(sid, seq, "tool.call", TS, jcs_python(payload), prev)
        prev = hashcore.sha256_hex(hashed)
        lines.append(event_line(hashed, prev))
        if seq % batch == batch - 1 or seq == n - 1:
            seal = SIGNER.seal(sid, seq, first, prev_seal, prev, "2026-01-15T09:31:00.000001Z")
            lines.append(seal.record)
            prev_seal, first = seal.hash, seq + 1
    return lines


def edit(i: int, f: Callable[[dict[str, Any]], None]) -> Callable[[list[bytes]], list[bytes]]:
    def apply(lines: list[bytes]) -> list[bytes]:
        rec = json.loads(lines[i])
        f(rec)
        out = list(lines)
        out[i] = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()
        return out

    return apply


def replace(i: int, old: bytes, new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    def apply(lines: list[bytes]) -> list[bytes]:
        out = list(lines)
        out[i] = out[i].replace(old, new, 1)
        return out

    return apply


def set_member(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda r: r.__setitem__(name, value)


CASES: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "valid": lambda ls: ls,
    "empty": lambda ls: [],
    "last not seal": lambda ls: ls[:-1],
    "uncovered": lambda ls: ls[:-2] + ls[-1:],
    "payload altered": replace(1, b'"seq":1}', b'"seq":9}'),
    "line deleted": lambda ls: ls[:2] + ls[3:],
    "line duplicated": lambda ls: ls[:2] + ls[1:],
    "lines swapped": lambda ls: [ls[1], ls[0], *ls[2:]],
    "signature altered": edit(3, lambda r: r.__setitem__("signature", "0" * 128)),
    "unknown key": edit(3, lambda r: r["payload"].__setitem__("key_id", "0" * 16)),
    "not canonical": replace(0, b'{"hash"', b'{ "hash"'),
    "malformed": replace(0, b"}", b""),
    "integer read as a double": replace(0, b"374956584419848800", b"9007199254740993"),
    "number overflow": replace(0, b"374956584419848800", b"1e400"),
    "duplicate key": replace(0, b'"seq":0}', b'"seq":0,"seq":0}'),
    "lone surrogate": replace(0, "ü".encode(), b"\\ud800"),
    "extra member": edit(0, set_member("extra", 1)),
    "missing member": edit(0, lambda r: r.pop("ts")),
    "bad ts": edit(0, set_member("ts", "2026-02-30T00:00:00Z")),
    "bad kind": edit(0, set_member("kind", "a b")),
    "reserved kind": edit(0, set_member("kind", "CHAIN_X")),
    "bad seq": edit(0, set_member("seq", -1)),
    "payload array": edit(0, set_member("payload", [])),
    "not an object": lambda ls: [b"[1,2]", *ls],
    "mixed sessions": lambda ls: ls[:4] + chain(sid="11111111-2222-3333-4444-555555555555")[4:],
    "seal payload member": edit(3, lambda r: r["payload"].__setitem__("x", 1)),
    "seal first_seq": edit(7, lambda r: r["payload"].__setitem__("first_seq", 0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_results_as_hashcore(case: str) -> None:
    lines = CASES[case](chain())
    ours = ChainVerifier(KEYS)
    ours.feed(lines)
    theirs = hashcore.ChainVerifier(KEYS)
    theirs.feed(lines)
    a, b = ours.finish(), theirs.finish()
    assert (a.ok, a.records, a.events, a.seals, list(a.keys_used)) == (
        b.ok,
        b.records,
        b.events,
        b.seals,
        list(b.keys_used),
    )
    assert (case == "valid") == a.ok
    if a.problem is None:
        assert b.problem is None
        return
    pa, pb = a.problem, b.problem
    assert pb is not None
    assert (pa.line, pa.seq, pa.kind, pa.reason, pa.expected, pa.found) == (
        pb.line,
        pb.seq,
        pb.kind,
        pb.reason,
        pb.expected,
        pb.found,
    ), case
    if pa.reason not in ("malformed_json", "json_rule"):
        assert pa.detail == pb.detail  # byte offsets aside, the same words
