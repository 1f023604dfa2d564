"""Throughput of hashcore.verify_batch against pure-Python and orjson equivalents.

Run on purpose (not a test), with a release build of hashcore installed:

    python bench/hashcore_bench.py

All ratios are measured in the same run, on the same generated batches.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import rfc8785

import hashcore

EVENTS = 100
ZERO = "0" * 64
SESSION = str(uuid.UUID(int=0x0B6C5B4E8F0A4C1E9D2B3A4F5E6D7C8B))
MEMBERS = {"session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash"}
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
KIND_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def small_payload(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "tool": "search",
        "call_id": f"call-{i:06d}",
        "args": {"query": "weather in Zürich tomorrow", "top_k": 5, "lang": "de"},
        "latency_ms": round(rng.uniform(1, 900), 3),
        "ok": True,
        "tokens": {"in": rng.randrange(10_000), "out": rng.randrange(10_000)},
        "note": "résumé ☃ " + "x" * rng.randrange(40, 60),
    }


def big_payload(rng: random.Random, i: int) -> dict[str, Any]:
    docs = [
        {
            "id": f"doc-{i}-{j}",
            "score": rng.random(),
            "title": f"Result {j} — ünïcode title",
            "snippet": "lorem ipsum dolor sit amet " * 3,
            "meta": {"rank": j, "tags": ["a", "b", "c"], "w": rng.uniform(-1e6, 1e6)},
        }
        for j in range(18)
    ]
    return {"tool": "retrieve", "call_id": f"call-{i:06d}", "results": docs, "ok": True}


def make_batch(payload: Callable[[random.Random, int], dict[str, Any]], seed: int) -> bytes:
    rng = random.Random(seed)
    prev = ZERO
    events = []
    for seq in range(EVENTS):
        ev: dict[str, Any] = {
            "session_id": SESSION,
            "seq": seq,
            "kind": "tool.result",
            "ts": f"2024-05-01T12:00:{seq % 60:02d}.{seq:06d}Z",
            "payload": payload(rng, seq),
            "prev_hash": prev,
        }
        ev["hash"] = hashlib.sha256(rfc8785.dumps(ev)).hexdigest()
        prev = ev["hash"]
        events.append(ev)
    # Clients send ordinary (non-canonical) JSON: insertion order, spaces.
    return json.dumps({"events": events}, ensure_ascii=False).encode()


def _no_dups(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate_key")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"literal {name}")


def pure_python(body: bytes, max_events: int) -> list[bytes]:
    """The checks of verify_batch with json + rfc8785 + hashlib."""
    doc = json.loads(body, object_pairs_hook=_no_dups, parse_constant=_no_constant, parse_int=float)
    if not isinstance(doc, dict) or set(doc) != {"events"} or not isinstance(doc["events"], list):
        raise ValueError("schema")
    events = doc["events"]
    if not events or len(events) > max_events:
        raise ValueError("schema")
    for ev in events:
        if not isinstance(ev, dict) or set(ev) != MEMBERS:
            raise ValueError("schema")
        if not (
            isinstance(ev["session_id"], str)
            and UUID_RE.match(ev["session_id"])
            and isinstance(ev["seq"], float)
            and ev["seq"].is_integer()
            and isinstance(ev["kind"], str)
            and KIND_RE.match(ev["kind"])
            and isinstance(ev["ts"], str)
            and TS_RE.match(ev["ts"])
            and isinstance(ev["payload"], dict)
            and HEX64_RE.match(ev["prev_hash"])
            and HEX64_RE.match(ev["hash"])
        ):
            raise ValueError("schema")
    records = []
    first = int(events[0]["seq"])
    prev = None
    for i, ev in enumerate(events):
        if ev["session_id"] != events[0]["session_id"] or ev["seq"] != first + i:
            raise ValueError("consistency")
        given = ev.pop("hash")
        digest = hashlib.sha256(rfc8785.dumps(ev)).hexdigest()
        if digest != given:
            raise ValueError("hash_mismatch")
        if (prev is not None and ev["prev_hash"] != prev) or (
            first + i == 0 and ev["prev_hash"] != ZERO
        ):
            raise ValueError("broken_link")
        prev = digest
        ev["hash"] = given
        records.append(rfc8785.dumps(ev))
    return records


def orjson_shortcut(body: bytes, max_events: int) -> list[str]:
    """Parse and hash sorted-key (non-canonical) bytes; checks nothing else."""
    events = orjson.loads(body)["events"]
    hashes = []
    for ev in events:
        given = ev.pop("hash")
        hashes.append(hashlib.sha256(orjson.dumps(ev, option=orjson.OPT_SORT_KEYS)).hexdigest())
        ev["hash"] = given
    return hashes


def native(body: bytes, max_events: int) -> list[bytes]:
    return hashcore.verify_batch(body, max_events).records


def native_bare(body: bytes, max_events: int) -> object:
    return hashcore.verify_batch(body, max_events)


def timeit(
    fn: Callable[[bytes, int], object], bodies: list[bytes], min_seconds: float = 1.0
) -> float:
    """Best seconds per batch over repeated rounds, after one untimed round."""
    for b in bodies:
        fn(b, 1000)
    best = float("inf")
    spent = 0.0
    while spent < min_seconds:
        t0 = time.perf_counter()
        for b in bodies:
            fn(b, 1000)
        dt = time.perf_counter() - t0
        spent += dt
        best = min(best, dt / len(bodies))
    return best


def openssl_sha256_bytes_per_s() -> float | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    out = subprocess.run(
        [exe, "speed", "-bytes", "8192", "-seconds", "2", "sha256"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        if line.startswith("sha256"):
            return float(line.split()[-1].rstrip("k")) * 1000
    return None


def main() -> None:
    cases = [("~300 B payloads", small_payload), ("~4 KB payloads", big_payload)]
    sha_rate = openssl_sha256_bytes_per_s()
    for name, payload in cases:
        bodies = [make_batch(payload, seed) for seed in range(5)]
        for b in bodies:
            assert native(b, 1000) == pure_python(b, 1000), "implementations disagree"
        size = sum(map(len, bodies)) / len(bodies)
        per_payload = (size - 2) / EVENTS - 250
        print(f"\n== {EVENTS} events/batch, {name}")
        print(f"   body {size / 1024:.1f} KiB, payload ≈{per_payload:.0f} B")
        results = {}
        for label, fn in [
            ("hashcore.verify_batch", native_bare),
            ("hashcore.verify_batch + .records", native),
            ("orjson + hashlib (no checks)", orjson_shortcut),
            ("json + rfc8785 + hashlib", pure_python),
        ]:
            t = timeit(fn, bodies, 0.5 if fn is pure_python else 1.0)
            results[label] = t
            print(f"{label:36s} {EVENTS / t:12,.0f} events/s {size / t / 1e6:9.1f} MB/s")
        ours = results["hashcore.verify_batch + .records"]
        print(f"speed-up vs pure Python:    {results['json + rfc8785 + hashlib'] / ours:6.1f}x")
        print(f"speed-up vs orjson+hashlib: {results['orjson + hashlib (no checks)'] / ours:6.2f}x")
        if payload is big_payload and sha_rate:
            print(
                f"fraction of `openssl speed sha256` (8 KiB blocks, {sha_rate / 1e6:.0f} MB/s): "
                f"{size / ours / sha_rate:.2f}"
            )


if __name__ == "__main__":
    main()
