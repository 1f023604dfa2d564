"""The benches' workload: valid, chained events (docs/protocol.md §1) and the
request bodies made of them, built before anything is timed.

- ingest bench: `ingest_bodies`, per session its 100-event batches in order
  (payloads ~300 B of JSON, bodies ~57 KiB, hashed with hashcore, sent as orjson);
- hashcore bench: `client_batch`, one 100-event batch as a client would send it
  (ordinary `json.dumps`, insertion order, spaces), hashed with rfc8785 + hashlib;
- replay bench: `replay_events`, the events of one 1000-event batch;
- latency and scale benches: `build_bodies`, the ingest bench's bodies with any
  number of events per batch and payloads of a chosen size (`sized_payload`).
"""

from __future__ import annotations

import functools
import json
import random
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from reference import ZERO, record_hash

import hashcore

EVENTS = 100  # events per batch, ingest and hashcore benches
Payload = Callable[[random.Random, int], dict[str, Any]]


def hash_event(event: dict[str, Any]) -> str:
    """docs/protocol.md §1, computed by hashcore (the event has no `hash` yet)."""
    return hashcore.sha256_hex(hashcore.canonicalize(orjson.dumps(event)))


def chain(
    session_id: str,
    first_seq: int,
    count: int,
    prev_hash: str,
    *,
    kind: str,
    ts: Callable[[int], str],
    payload: Callable[[int], dict[str, Any]],
    digest: Callable[[dict[str, Any]], str] = hash_event,
) -> list[dict[str, Any]]:
    """`count` events from `first_seq` on, linked to `prev_hash` and to each other,
    members in the order a client writes them (payloads built in seq order)."""
    events = []
    for seq in range(first_seq, first_seq + count):
        event: dict[str, Any] = {
            "session_id": session_id,
            "seq": seq,
            "kind": kind,
            "ts": ts(seq),
            "payload": payload(seq),
            "prev_hash": prev_hash,
        }
        event["hash"] = prev_hash = digest(event)
        events.append(event)
    return events


# ---- payloads --------------------------------------------------------------------


def tool_payload(rng: random.Random, seq: int, note: tuple[int, int] = (90, 110)) -> dict[str, Any]:
    """A tool call with nesting, numbers and non-ASCII text: about 300 bytes of JSON
    with the default note, about 250 with `note=(40, 60)`."""
    return {
        "tool": "search",
        "call_id": f"call-{seq:06d}",
        "args": {"query": "weather in Zürich tomorrow", "top_k": 5, "lang": "de"},
        "latency_ms": round(rng.uniform(1, 900), 3),
        "ok": True,
        "tokens": {"in": rng.randrange(10_000), "out": rng.randrange(10_000)},
        "note": "résumé ☃ " + "x" * rng.randrange(*note),
    }


def small_payload(rng: random.Random, seq: int) -> dict[str, Any]:
    """The hashcore bench's "~300 B" case."""
    return tool_payload(rng, seq, (40, 60))


def big_payload(rng: random.Random, seq: int) -> dict[str, Any]:
    """About 4 KB: 18 retrieval results with floats, arrays and non-ASCII titles."""
    docs = [
        {
            "id": f"doc-{seq}-{j}",
            "score": rng.random(),
            "title": f"Result {j} — ünïcode title",
            "snippet": "lorem ipsum dolor sit amet " * 3,
            "meta": {"rank": j, "tags": ["a", "b", "c"], "w": rng.uniform(-1e6, 1e6)},
        }
        for j in range(18)
    ]
    return {"tool": "retrieve", "call_id": f"call-{seq:06d}", "results": docs, "ok": True}


# ---- the benches' bodies -----------------------------------------------------------


def _ingest_ts(seq: int) -> str:
    hms = f"{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}"
    return f"2026-11-27T{hms}.{seq:06d}Z"


def ingest_bodies(sessions: int, batches: int, seed: int = 7) -> list[list[bytes]]:
    """Request bodies of valid, chained events: per session, its batches in order."""
    rng = random.Random(seed)
    out = []
    for _ in range(sessions):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        prev, bodies = ZERO, []
        for k in range(batches):
            events = chain(
                sid,
                k * EVENTS,
                EVENTS,
                prev,
                kind="tool.result",
                ts=_ingest_ts,
                payload=lambda seq: tool_payload(rng, seq),
            )
            prev = events[-1]["hash"]
            bodies.append(orjson.dumps({"events": events}))
        out.append(bodies)
    return out


DEFAULT_PAYLOAD = 300  # bytes: `tool_payload` as it is


@functools.cache
def _corpus() -> str:
    """~1 MiB of random lower-case words: filler that compresses like text."""
    rng = random.Random(11)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randrange(2, 10))) for _ in range(4096)]
    return " ".join(rng.choices(words, k=180_000))


def sized_payload(rng: random.Random, seq: int, size: int) -> dict[str, Any]:
    """A tool result of about `size` bytes of JSON: `tool_payload` as it is for the
    default size, else a shorter one plus an `output` of text cut from a corpus of
    random words at a random place (so that no two events are alike)."""
    if size <= DEFAULT_PAYLOAD:
        return tool_payload(rng, seq)
    payload = tool_payload(rng, seq, (40, 60))
    fill = size - len(orjson.dumps(payload)) - len(',"output":""')
    if fill > 0:
        text = _corpus()
        if fill > len(text):
            raise ValueError(f"payloads of {size} bytes are beyond the corpus")
        at = rng.randrange(len(text) - fill)
        payload["output"] = text[at : at + fill]
    return payload


def build_bodies(
    sessions: int, batches: int, events: int, payload_bytes: int = DEFAULT_PAYLOAD, seed: int = 7
) -> list[list[bytes]]:
    """Like `ingest_bodies` (the same bodies for 100 events and the default payload),
    with `events` per batch and payloads of about `payload_bytes`."""
    rng = random.Random(seed)
    out = []
    for _ in range(sessions):
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        prev, bodies = ZERO, []
        for k in range(batches):
            chained = chain(
                sid,
                k * events,
                events,
                prev,
                kind="tool.result",
                ts=_ingest_ts,
                payload=lambda seq: sized_payload(rng, seq, payload_bytes),
            )
            prev = chained[-1]["hash"]
            bodies.append(orjson.dumps({"events": chained}))
        out.append(bodies)
    return out


CLIENT_SESSION = str(uuid.UUID(int=0x0B6C5B4E8F0A4C1E9D2B3A4F5E6D7C8B))


def client_batch(payload: Payload, seed: int) -> bytes:
    """One batch of a new session, hashed with rfc8785 + hashlib (not hashcore), as
    ordinary non-canonical JSON: insertion order, spaces, raw UTF-8."""
    rng = random.Random(seed)
    events = chain(
        CLIENT_SESSION,
        0,
        EVENTS,
        ZERO,
        kind="tool.result",
        ts=lambda seq: f"2024-05-01T12:00:{seq % 60:02d}.{seq:06d}Z",
        payload=lambda seq: payload(rng, seq),
        digest=record_hash,
    )
    return json.dumps({"events": events}, ensure_ascii=False).encode()


def _replay_ts(seq: int) -> str:
    return f"2026-11-27T10:{seq // 60_000 % 60:02d}:{seq // 1000 % 60:02d}.{seq % 1000:03d}Z"


def _replay_payload(seq: int) -> dict[str, Any]:
    return {
        "tool": "search",
        "call": seq,
        "args": {"query": "weather in Zürich tomorrow", "top_k": 5},
        "latency_ms": 12.5,
        "ok": True,
    }


def replay_events(
    session_id: str, first_seq: int, count: int, prev_hash: str
) -> list[dict[str, Any]]:
    """The replay bench's events (~200 B payloads), hashed with hashcore."""
    return chain(
        session_id,
        first_seq,
        count,
        prev_hash,
        kind="tool.call",
        ts=_replay_ts,
        payload=_replay_payload,
    )
