"""Building valid events for tests with an independent implementation of
PROTOCOL §1: the `rfc8785` package and hashlib, never hashcore."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import rfc8785

ZERO = "0" * 64


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k not in ("hash", "signature")}
    return hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def body_of(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"events": events}).encode()


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
