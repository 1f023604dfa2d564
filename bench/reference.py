"""The pure-Python reference validator: what `hashcore.verify_batch` does, written
the straightforward way with `json`, `rfc8785` and `hashlib` (docs/protocol.md §2, §3).

Used by the conventional server of the ingest bench (bench/baseline_app.py) and as
the pure-Python baseline of bench/hashcore_bench.py, which also checks that it and
hashcore return the same records byte for byte. It checks the I-JSON rules
(duplicate names, lone surrogates, numbers that are not doubles, the integer rule
above 2^53-1), the seven members of every event and their formats, the batch's
consistency, every hash and every link. It does not count nesting depth (Python's
parser has only its recursion limit). Bench only.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import rfc8785

ZERO = "0" * 64
MAX_SAFE = 2**53 - 1
MEMBERS = frozenset({"session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash"})
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KIND_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")
HEX_RE = re.compile(r"[0-9a-f]{64}")


class Rejected(Exception):
    """A batch the protocol rejects: the HTTP status and the problem `code`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class Batch:
    """A verified batch, with the same attributes as `hashcore.Batch`."""

    session_id: str
    first_seq: int
    last_seq: int
    first_prev_hash: str
    last_hash: str
    seqs: list[int]
    kinds: list[str]
    ts: list[str]
    hashes: list[str]
    records: list[bytes]  # JCS of each whole event, `hash` included

    @property
    def count(self) -> int:
        return len(self.seqs)


def record_hash(record: dict[str, Any]) -> str:
    """docs/protocol.md §1: SHA-256 of the JCS of the record without hash and signature."""
    hashed = {k: v for k, v in record.items() if k not in ("hash", "signature")}
    return hashlib.sha256(rfc8785.dumps(hashed)).hexdigest()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise Rejected(400, "json_rule", "an object has two members with the same name")
    return obj


def _no_constant(name: str) -> Any:
    raise Rejected(400, "json_rule", f"{name} is not a JSON number")


def _integer(literal: str) -> int | float:
    """An integer literal: exact up to 2^53-1; above, only as JCS writes a double."""
    value = int(literal)
    if -MAX_SAFE <= value <= MAX_SAFE:
        return value
    try:
        double = float(value)
    except OverflowError:
        raise Rejected(400, "json_rule", f"{literal[:40]} overflows a double") from None
    if rfc8785.dumps(double).decode() != literal:
        raise Rejected(400, "json_rule", f"{literal[:40]} is not exactly a double")
    return double


def _jcs(value: Any, where: str) -> bytes:
    try:
        return rfc8785.dumps(value)
    except ValueError as exc:  # CanonicalizationError, or a lone surrogate in a name
        raise Rejected(400, "json_rule", f"{where}: {exc}") from exc


def check_event(i: int, ev: Any) -> None:
    """The seven members of docs/protocol.md §1 and their formats."""
    if not isinstance(ev, dict) or ev.keys() != MEMBERS:
        raise Rejected(400, "schema", f"event {i} must have exactly the members {sorted(MEMBERS)}")
    if not (isinstance(ev["session_id"], str) and UUID_RE.fullmatch(ev["session_id"])):
        raise Rejected(400, "schema", f"event {i}: session_id")
    seq = ev["seq"]
    if not (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SAFE):
        raise Rejected(400, "schema", f"event {i}: seq")
    kind = ev["kind"]
    if not (isinstance(kind, str) and KIND_RE.fullmatch(kind)):
        raise Rejected(400, "schema", f"event {i}: kind")
    if kind.startswith("CHAIN_"):
        raise Rejected(400, "reserved_kind", f"event {i}: kind {kind} is reserved")
    if not (isinstance(ev["ts"], str) and TS_RE.fullmatch(ev["ts"])):
        raise Rejected(400, "schema", f"event {i}: ts")
    if not isinstance(ev["payload"], dict):
        raise Rejected(400, "schema", f"event {i}: payload")
    for member in ("prev_hash", "hash"):
        if not (isinstance(ev[member], str) and HEX_RE.fullmatch(ev[member])):
            raise Rejected(400, "schema", f"event {i}: {member}")


def verify(body: bytes, max_events: int) -> Batch:
    """Parse, check and hash a request body `{"events": [...]}`, or raise `Rejected`."""
    try:
        doc = json.loads(
            body,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_integer,
        )
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, Rejected):
            raise
        raise Rejected(400, "malformed_json", str(exc)) from exc
    if not isinstance(doc, dict) or doc.keys() != {"events"} or not isinstance(doc["events"], list):
        raise Rejected(400, "schema", 'the body must be {"events": [...]}')
    events = doc["events"]
    if not events:
        raise Rejected(400, "schema", "no events")
    if len(events) > max_events:
        raise Rejected(413, "too_large", f"more than {max_events} events")
    for i, ev in enumerate(events):
        check_event(i, ev)
    sid, first = events[0]["session_id"], events[0]["seq"]
    prev: str | None = None
    hashes: list[str] = []
    records: list[bytes] = []
    for i, ev in enumerate(events):
        if ev["session_id"] != sid:
            raise Rejected(400, "mixed_sessions", f"event {i}: another session")
        if ev["seq"] != first + i:
            raise Rejected(400, "seq_not_contiguous", f"event {i}: seq {ev['seq']}")
        given = ev.pop("hash")
        canon = _jcs(ev, f"event {i}")
        digest = hashlib.sha256(canon).hexdigest()
        if digest != given:
            raise Rejected(400, "hash_mismatch", f"event {i}: expected {digest}, got {given}")
        if (prev is not None and ev["prev_hash"] != prev) or (
            ev["seq"] == 0 and ev["prev_hash"] != ZERO
        ):
            raise Rejected(400, "broken_link", f"event {i}: prev_hash")
        prev = digest
        hashes.append(digest)
        # JCS of the whole event without a second canonicalization: "hash" sorts first.
        records.append(b'{"hash":"' + digest.encode() + b'",' + canon[1:])
    return Batch(
        session_id=sid,
        first_seq=first,
        last_seq=first + len(events) - 1,
        first_prev_hash=events[0]["prev_hash"],
        last_hash=hashes[-1],
        seqs=[ev["seq"] for ev in events],
        kinds=[ev["kind"] for ev in events],
        ts=[ev["ts"] for ev in events],
        hashes=hashes,
        records=records,
    )
