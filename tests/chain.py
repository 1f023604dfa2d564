"""The test oracle: valid events, batches and chains, built with an independent
implementation of PROTOCOL §1 (the `rfc8785` package and hashlib, never hashcore),
for the service tests and hashcore's own tests alike."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import rfc8785

ZERO = "0" * 64
SID = "0b6c5b4e-8f0a-4c1e-9d2b-3a4f5e6d7c8b"
OTHER_SID = "11111111-2222-3333-4444-555555555555"
TS = "2024-02-29T23:59:60.123456Z"
SEAL_TS = "2024-05-01T12:00:00.000001Z"


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k not in ("hash", "signature")}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def body_of(events: list[Any], *, ensure_ascii: bool = True) -> bytes:
    """The ingest body `{"events": [...]}` as `json.dumps` writes it: non-ASCII
    characters as `\\u` escapes, or as raw UTF-8 when ensure_ascii is False."""
    return json.dumps({"events": events}, ensure_ascii=ensure_ascii).encode()


def make_event(
    seq: int,
    prev: str,
    payload: dict[str, Any] | None = None,
    *,
    sid: str = SID,
    kind: str = "tool.call",
) -> dict[str, Any]:
    """One event of session `sid` at `seq`, linked to `prev`, with its hash."""
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
    """`n` linked events from seq `first`, the first one linked to `prev`."""
    events = []
    for seq in range(first, first + n):
        event = make_event(seq, prev, sid=sid)
        prev = event["hash"]
        events.append(event)
    return events


@dataclass
class Chain:
    """A session's events, made and linked on demand."""

    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    events: list[dict[str, Any]] = field(default_factory=list)
    payload: Callable[[int], dict[str, Any]] = lambda seq: {
        "model": "gpt-test",
        "input": f"question {seq}",
        "tokens": seq * 3,
        "ok": True,
    }

    def make(self, n: int) -> list[dict[str, Any]]:
        """Append n new events and return them."""
        made = []
        for _ in range(n):
            seq = len(self.events)
            event = {
                "session_id": self.session_id,
                "seq": seq,
                "kind": "llm.call",
                "ts": f"2026-11-27T10:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1000:03d}Z",
                "payload": self.payload(seq),
                "prev_hash": self.events[-1]["hash"] if self.events else ZERO,
            }
            event["hash"] = event_hash(event)
            self.events.append(event)
            made.append(event)
        return made

    def batches(self, n_batches: int, size: int) -> Iterator[list[dict[str, Any]]]:
        for _ in range(n_batches):
            yield self.make(size)


def relink(events: list[dict[str, Any]], prev_hash: str) -> list[dict[str, Any]]:
    """Recompute hashes and links of `events` (after an edit), starting from prev_hash."""
    out = []
    for e in events:
        e = {**e, "prev_hash": prev_hash}
        e["hash"] = event_hash(e)
        prev_hash = e["hash"]
        out.append(e)
    return out
