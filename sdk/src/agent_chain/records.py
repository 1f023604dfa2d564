"""Events as PROTOCOL §1 defines them: built, hashed and written as the JCS line
that replay returns, and read back from such a line."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import canonical
from .errors import InvalidEventError

ZERO_HASH = "0" * 64
SEAL_KIND = "CHAIN_SEAL"
MAX_SEQ = canonical.MAX_SAFE_INTEGER

_KIND = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}", re.ASCII)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_LINE_HEAD = b'{"hash":"'
_HEAD_LEN = len(_LINE_HEAD) + 64 + 2  # {"hash":"<64 hex>",


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InvalidEventError(
            "kind", f"kind must be 1-128 chars of [A-Za-z0-9_.:/-], got {kind!r}", "kind"
        )
    if kind.startswith("CHAIN_"):
        raise InvalidEventError(
            "reserved_kind", f"kind {kind!r}: kinds starting with CHAIN_ are the server's", "kind"
        )
    return str.__str__(kind)


def check_session_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not _UUID.fullmatch(session_id):
        raise ValueError(
            f"session_id must be a lowercase hyphenated UUID (8-4-4-4-12), got {session_id!r}"
        )
    return session_id


def new_session_id() -> str:
    return str(uuid.uuid4())


def utc_timestamp(now: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds, as §1 requires: ``2026-01-15T09:30:00.250000Z``."""
    t = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}Z"


def is_hex64(s: object) -> bool:
    return isinstance(s, str) and _HEX64.fullmatch(s) is not None


def hashed_bytes(
    session_id: str, seq: int, kind: str, ts: str, payload_jcs: bytes, prev_hash: str
) -> bytes:
    """JCS of the six hashed members (§1), assembled in their sorted order. Every
    member but the payload is plain ASCII that JCS writes without escapes."""
    return b"".join(
        (
            b'{"kind":"',
            kind.encode("ascii"),
            b'","payload":',
            payload_jcs,
            b',"prev_hash":"',
            prev_hash.encode("ascii"),
            b'","seq":',
            str(seq).encode("ascii"),
            b',"session_id":"',
            session_id.encode("ascii"),
            b'","ts":"',
            ts.encode("ascii"),
            b'"}',
        )
    )


def event_line(hashed: bytes, digest: str) -> bytes:
    """The whole event's JCS line (``hash`` sorts first), without newline."""
    return _LINE_HEAD + digest.encode("ascii") + b'",' + hashed[1:]


@dataclass(frozen=True)
class EventLine:
    """One event read back from its JCS line."""

    seq: int
    hash: str
    prev_hash: str
    session_id: str
    kind: str
    record: dict[str, Any]


class BadLine(ValueError):
    """A line that is not a well-formed canonical event."""


def parse_event_line(line: bytes, *, canonical_check: bool = True) -> EventLine:
    """Reads an event line written by `event_line`, re-hashing it. With
    `canonical_check`, also re-canonicalizes it (what the server will do)."""
    if not line.startswith(_LINE_HEAD) or line[_HEAD_LEN - 2 : _HEAD_LEN] != b'",':
        raise BadLine("not an event line")
    digest = line[len(_LINE_HEAD) : _HEAD_LEN - 2].decode("ascii", "replace")
    hashed = b"{" + line[_HEAD_LEN:]
    if canonical.sha256_hex(hashed) != digest:
        raise BadLine("hash does not match the line")
    try:
        rec = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadLine(f"not JSON: {exc}") from exc
    if not isinstance(rec, dict) or set(rec) != {
        "hash",
        "kind",
        "payload",
        "prev_hash",
        "seq",
        "session_id",
        "ts",
    }:
        raise BadLine("not the seven members of an event")
    seq, kind, sid, prev = rec["seq"], rec["kind"], rec["session_id"], rec["prev_hash"]
    if not (isinstance(seq, int) and 0 <= seq <= MAX_SEQ) or not is_hex64(prev):
        raise BadLine("bad seq or prev_hash")
    if not isinstance(sid, str) or not isinstance(kind, str) or not isinstance(rec["ts"], str):
        raise BadLine("bad member types")
    if canonical_check:
        try:
            payload = canonical.jcs(canonical.normalize_payload(rec["payload"]))
            check_kind(kind)
            check_session_id(sid)
        except (InvalidEventError, ValueError) as exc:
            raise BadLine(f"would be refused: {exc}") from exc
        if hashed_bytes(sid, seq, kind, rec["ts"], payload, prev) != hashed:
            raise BadLine("not canonical")
    return EventLine(seq, digest, prev, sid, kind, rec)


def line_hash(line: bytes) -> str:
    """The ``hash`` member of a line written by `event_line` (no checks)."""
    return line[len(_LINE_HEAD) : _HEAD_LEN - 2].decode("ascii")
