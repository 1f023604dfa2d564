"""Valid events, batches and chains, built with rfc8785 + hashlib (not hashcore)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import rfc8785

import hashcore

SID = "0b6c5b4e-8f0a-4c1e-9d2b-3a4f5e6d7c8b"
OTHER_SID = "11111111-2222-3333-4444-555555555555"
ZERO = "0" * 64
TS = "2024-02-29T23:59:60.123456Z"
SEAL_TS = "2024-05-01T12:00:00.000001Z"


def shared_dir() -> Path:
    """shared/ next to the repository; a missing folder fails the test."""
    path = Path(__file__).resolve().parents[3] / "shared"
    assert path.is_dir(), f"conformance vectors not found at {path}"
    return path


def event_hash(event: dict[str, Any]) -> str:
    hashed = {k: v for k, v in event.items() if k not in ("hash", "signature")}
    return hashlib.sha256(rfc8785.dumps(hashed)).hexdigest()


def make_event(
    seq: int,
    prev: str,
    payload: dict[str, Any] | None = None,
    *,
    sid: str = SID,
    kind: str = "tool.call",
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "session_id": sid,
        "seq": seq,
        "kind": kind,
        "ts": TS,
        "payload": {"n": seq, "msg": f"hello ☃ {seq}", "args": {"q": "x", "k": [1, 2.5]}}
        if payload is None
        else payload,
        "prev_hash": prev,
    }
    event["hash"] = event_hash(event)
    return event


def make_events(first: int, n: int, prev: str = ZERO, *, sid: str = SID) -> list[dict[str, Any]]:
    events = []
    for seq in range(first, first + n):
        event = make_event(seq, prev, sid=sid)
        prev = event["hash"]
        events.append(event)
    return events


def body(events: list[Any]) -> bytes:
    return json.dumps({"events": events}, ensure_ascii=False).encode()


def make_chain(signer: hashcore.Signer, sizes: list[int], *, sid: str = SID) -> list[bytes]:
    """Replay lines of a chain: batches of the given sizes, each followed by its seal."""
    lines: list[bytes] = []
    prev, prev_seal, first = ZERO, ZERO, 0
    for n in sizes:
        batch = hashcore.verify_batch(body(make_events(first, n, prev, sid=sid)), 1000)
        lines.extend(batch.records)
        prev = batch.last_hash
        seal = signer.seal(sid, batch.last_seq, first, prev_seal, prev, SEAL_TS)
        lines.append(seal.record)
        prev_seal = seal.hash
        first += n
    return lines
