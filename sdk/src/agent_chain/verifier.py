"""The auditor's chain check (PROTOCOL §6) in pure Python: rfc8785, hashlib and
cryptography only. The same results as `hashcore.ChainVerifier` (same
reasons, lines, seqs, expected and found values; the tests compare them), and
`verify_chain` uses hashcore when it is importable unless told otherwise.

Streaming: the state is a few hashes and counters whatever the number of records.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import canonical
from .bundle import key_id_of
from .records import SEAL_KIND, ZERO_HASH

MAX_SAFE = canonical.MAX_SAFE_INTEGER
_EVENT_MEMBERS = ("hash", "kind", "payload", "prev_hash", "seq", "session_id", "ts")
_SEAL_MEMBERS = ("hash", "kind", "payload", "prev_hash", "seq", "session_id", "signature", "ts")
_SEAL_PAYLOAD = ("first_seq", "key_id", "prev_seal")
_CHECK_ORDER = ("session_id", "seq", "kind", "ts", "payload", "prev_hash", "hash")
_SEAL_CHECK_ORDER = (*_CHECK_ORDER, "signature")
_KIND = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}", re.ASCII)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)
_HEX = re.compile(r"[0-9a-f]*", re.ASCII)
_TS = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?Z", re.ASCII)
_SURROGATE = re.compile("[\ud800-\udfff]")


class ReportLike(Protocol):
    """What `audit.check_head` needs of a report (ours or hashcore's)."""

    @property
    def events(self) -> int: ...
    @property
    def seals(self) -> int: ...


@dataclass(frozen=True)
class Problem:
    """The first problem found in a chain (the fields of `hashcore.Problem`)."""

    line: int
    """1-based index of the record in the stream (0: the stream as a whole)."""
    seq: int | None
    kind: str | None
    reason: str
    detail: str
    expected: str | None = None
    found: str | None = None


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    records: int
    events: int
    seals: int
    keys_used: list[str] = field(default_factory=list)
    problem: Problem | None = None


class _Found(Exception):
    def __init__(
        self, reason: str, detail: str, expected: str | None = None, found: str | None = None
    ) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.expected, self.found = reason, detail, expected, found


# ---- I-JSON (PROTOCOL §2) ---------------------------------------------------------


class JsonRuleViolation(ValueError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in items:
        if k in out:
            raise JsonRuleViolation("duplicate_key", f"duplicate member name {k!r}")
        out[k] = v
    return out


def _int(text: str) -> int | float:
    """§6: an auditor reads every number as a double, without the integer rule
    of §2 (a record may hold 374956584419848800, which came from a double)."""
    n = int(text)
    if -MAX_SAFE <= n <= MAX_SAFE:
        return n
    try:
        return float(n)
    except OverflowError:
        raise JsonRuleViolation("number_overflow", f"{text} overflows a double") from None


def _float(text: str) -> float:
    f = float(text)
    if f in (float("inf"), float("-inf")):
        raise JsonRuleViolation("number_overflow", f"{text} overflows a double")
    return f


def _constant(text: str) -> Any:
    raise json.JSONDecodeError(f"{text} is not JSON", text, 0)


def _walk(v: Any, depth: int) -> None:
    if isinstance(v, str):
        if _SURROGATE.search(v):
            raise JsonRuleViolation("lone_surrogate", "a string holds a lone surrogate")
    elif isinstance(v, dict):
        if depth > canonical.MAX_DEPTH:
            raise JsonRuleViolation("depth", f"nesting deeper than {canonical.MAX_DEPTH}")
        for k, x in v.items():
            if _SURROGATE.search(k):
                raise JsonRuleViolation("lone_surrogate", "a member name holds a lone surrogate")
            _walk(x, depth + 1)
    elif isinstance(v, list):
        if depth > canonical.MAX_DEPTH:
            raise JsonRuleViolation("depth", f"nesting deeper than {canonical.MAX_DEPTH}")
        for x in v:
            _walk(x, depth + 1)


def parse_ijson(data: bytes) -> Any:
    """One record's JSON text under the rules of §2 as §6 applies them: every
    number a double (no integer rule).
    Raises JsonRuleViolation (rule malformed_json for plain syntax errors)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRuleViolation("utf8", f"not UTF-8 ({exc})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise JsonRuleViolation("malformed_json", str(exc)) from None
    except RecursionError:
        raise JsonRuleViolation("depth", f"nesting deeper than {canonical.MAX_DEPTH}") from None
    _walk(value, 1)
    return value


# ---- record shape (§1, §4) --------------------------------------------------------


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _as_seq(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    if f.is_integer() and 0 <= f <= MAX_SAFE:
        return int(f)
    return None


def _utf16(s: str) -> bytes:
    return s.encode("utf-16-be", "surrogatepass")


def _check_members(
    m: dict[str, Any], expected: tuple[str, ...], order: tuple[str, ...], what: str
) -> None:
    names = sorted(m, key=_utf16)
    if names == list(expected):
        return
    for k in names:
        if k not in expected:
            raise _Found("schema", f"unknown member {_rust_str(k)} in {what}", None, k)
    missing = next((e for e in (*order, *expected) if e not in m), "?")
    raise _Found("schema", f"missing member {_rust_str(missing)} in {what}", None, missing)


def _rust_str(s: str) -> str:
    """How Rust's `{:?}` writes a plain string (enough for member names)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_hex(s: Any, n: int) -> bool:
    return isinstance(s, str) and len(s) == n and _HEX.fullmatch(s) is not None


def _is_ts(s: str) -> bool:
    m = _TS.fullmatch(s)
    if m is None:
        return False
    y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    days = {1: 31, 3: 31, 5: 31, 7: 31, 8: 31, 10: 31, 12: 31, 4: 30, 6: 30, 9: 30, 11: 30}
    dim = days.get(mo, 29 if (mo == 2 and leap) else 28 if mo == 2 else 0)
    return 1 <= d <= dim and h <= 23 and mi <= 59 and sec <= 60


def _string(m: dict[str, Any], name: str) -> str:
    v = m[name]
    if not isinstance(v, str):
        raise _Found("schema", f"{name} must be a string, got {_type_name(v)}", None, name)
    return v


def _check_record(m: dict[str, Any], seal: bool) -> None:
    if seal:
        _check_members(m, _SEAL_MEMBERS, _SEAL_CHECK_ORDER, "seal")
    else:
        _check_members(m, _EVENT_MEMBERS, _CHECK_ORDER, "event")
    sid = _string(m, "session_id")
    if not _UUID.fullmatch(sid):
        raise _Found(
            "schema",
            f"session_id must be a lowercase hyphenated UUID, got {_rust_str(sid)}",
            None,
            "session_id",
        )
    if _as_seq(m["seq"]) is None:
        raise _Found("schema", "seq must be an integer in 0..2^53-1", None, "seq")
    kind = _string(m, "kind")
    if not _KIND.fullmatch(kind):
        raise _Found("schema", "kind must be 1-128 chars of [A-Za-z0-9_.:/-]", None, "kind")
    if kind.startswith("CHAIN_") and not (seal and kind == SEAL_KIND):
        detail = f"kind {_rust_str(kind)} is reserved for the server"
        raise _Found("reserved_kind", detail, None, "kind")
    ts = _string(m, "ts")
    if not _is_ts(ts):
        raise _Found(
            "schema",
            f"ts must be RFC 3339 UTC YYYY-MM-DDTHH:MM:SS[.f]Z, got {_rust_str(ts)}",
            None,
            "ts",
        )
    if not isinstance(m["payload"], dict):
        raise _Found(
            "schema", f"payload must be an object, got {_type_name(m['payload'])}", None, "payload"
        )
    for name in ("prev_hash", "hash"):
        if not _is_hex(_string(m, name), 64):
            raise _Found("schema", f"{name} must be 64 lowercase hex chars", None, name)


# ---- the verifier -------------------------------------------------------------------


class ChainVerifier:
    """Feeds records one by one; keeps the first problem and then only counts.
    The API of `hashcore.ChainVerifier`."""

    def __init__(self, public_keys: Mapping[str, bytes]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for kid, raw in public_keys.items():
            if len(raw) != 32:
                raise ValueError(f"public key {kid!r} must be 32 bytes")
            if key_id_of(raw) != kid:
                raise ValueError(
                    f"key_id {kid!r} does not match its public key (expected {key_id_of(raw)!r})"
                )
            self._keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        self.records = 0
        self._events = 0
        self._seals = 0
        self._keys_used: list[str] = []
        self._session_id: str | None = None
        self._next_seq = 0
        self._last_event_hash = ZERO_HASH
        self._prev_seal = ZERO_HASH
        self._last_seal_seq: int | None = None
        self._last_seq: int | None = None
        self._last_kind = ""
        self._last_was_seal = False
        self._problem: Problem | None = None

    def feed(self, records: Iterable[bytes]) -> None:
        for line in records:
            self.feed_one(line)

    def feed_ndjson(self, chunk: bytes) -> None:
        for line in chunk.split(b"\n"):
            if line:
                self.feed_one(line)

    def feed_one(self, line: bytes) -> None:
        self.records += 1
        if self._problem is not None:
            return
        seq_kind: list[Any] = [None, None]
        try:
            self._check(line, seq_kind)
        except _Found as f:
            self._problem = Problem(
                self.records, seq_kind[0], seq_kind[1], f.reason, f.detail, f.expected, f.found
            )

    def finish(self) -> ChainReport:
        problem = self._problem or self._end_problem()
        return ChainReport(
            problem is None,
            self.records,
            self._events,
            self._seals,
            list(self._keys_used),
            problem,
        )

    def _end_problem(self) -> Problem | None:
        def at_end(
            reason: str, detail: str, expected: str | None = None, found: str | None = None
        ) -> Problem:
            kind = self._last_kind if self.records > 0 else None
            return Problem(self.records, self._last_seq, kind, reason, detail, expected, found)

        if self.records == 0:
            return at_end("empty", "the stream holds no record")
        covered = 0 if self._last_seal_seq is None else self._last_seal_seq + 1
        if not self._last_was_seal:
            uncovered = max(0, self._next_seq - covered)
            return at_end(
                "last_not_seal",
                f"the last record is not a seal; {uncovered} event(s) after the last seal "
                "are not covered",
                SEAL_KIND,
                self._last_kind,
            )
        if covered != self._next_seq:
            return at_end(
                "uncovered_events",
                f"seals cover events up to seq {covered}, the last event has seq "
                f"{max(0, self._next_seq - 1)}",
                str(self._next_seq),
                str(covered),
            )
        return None

    def _check(self, line: bytes, out: list[Any]) -> None:
        try:
            v = parse_ijson(line)
        except JsonRuleViolation as exc:
            reason = "malformed_json" if exc.rule == "malformed_json" else "json_rule"
            raise _Found(reason, str(exc), None, exc.rule) from None
        if not isinstance(v, dict):
            raise _Found("schema", f"a record must be an object, got {_type_name(v)}")
        seq = _as_seq(v.get("seq"))
        kind = v.get("kind") if isinstance(v.get("kind"), str) else None
        out[0], out[1] = seq, kind
        is_seal = kind == SEAL_KIND
        _check_record(v, is_seal)
        assert seq is not None and kind is not None
        sid = v["session_id"]
        if self._session_id is None:
            self._session_id = sid
        elif sid != self._session_id:
            raise _Found(
                "mixed_sessions",
                "the record belongs to another session than the first record",
                self._session_id,
                sid,
            )
        hashed = canonical.jcs({k: x for k, x in v.items() if k not in ("hash", "signature")})
        digest = canonical.sha256_hex(hashed)
        if digest != v["hash"]:
            raise _Found(
                "hash_mismatch", "the record's hash does not match its content", digest, v["hash"]
            )
        if is_seal:
            self._check_seal(v, seq, digest)
        else:
            if seq != self._next_seq:
                raise _Found(
                    "seq_gap",
                    f"expected the event with seq {self._next_seq}, found seq {seq}",
                    str(self._next_seq),
                    str(seq),
                )
            if v["prev_hash"] != self._last_event_hash:
                raise _Found(
                    "broken_link",
                    "prev_hash is not the hash of the previous event",
                    self._last_event_hash,
                    v["prev_hash"],
                )
            self._next_seq += 1
            self._events += 1
            self._last_event_hash = digest
            self._last_was_seal = False
        self._last_seq = seq
        self._last_kind = kind
        if is_seal:
            ok = canonical.jcs(v) == line
        else:
            ok = line == b'{"hash":"' + digest.encode() + b'",' + hashed[1:]
        if not ok:
            raise _Found("not_canonical", "the line is not the JCS serialization of its record")

    def _check_seal(self, v: dict[str, Any], seq: int, digest: str) -> None:
        payload = v["payload"]
        try:
            _check_members(payload, _SEAL_PAYLOAD, _SEAL_PAYLOAD, "seal payload")
        except _Found as f:
            raise _Found("schema", f.detail, None, f"payload.{f.found}") from None
        first_seq = _as_seq(payload["first_seq"])
        if first_seq is None:
            raise _Found("schema", "payload.first_seq must be an integer in 0..2^53-1")
        key_id = payload["key_id"]
        if not _is_hex(key_id, 16):
            raise _Found("schema", "payload.key_id must be 16 lowercase hex chars")
        prev_seal = payload["prev_seal"]
        if not _is_hex(prev_seal, 64):
            raise _Found("schema", "payload.prev_seal must be 64 lowercase hex chars")
        signature = v["signature"] if isinstance(v["signature"], str) else ""
        if not _is_hex(signature, 128):
            raise _Found("schema", "signature must be 128 lowercase hex chars")
        want_first = 0 if self._last_seal_seq is None else self._last_seal_seq + 1
        if self._events == 0 or self._next_seq <= want_first:
            raise _Found(
                "seal_coverage",
                "the seal covers no event that is not already covered",
                f"an event with seq {want_first} before the seal",
                f"seal at seq {seq}",
            )
        last_event = self._next_seq - 1
        if seq != last_event:
            raise _Found(
                "seal_coverage",
                f"the seal's seq must be the seq of the last event ({last_event})",
                str(last_event),
                str(seq),
            )
        if first_seq != want_first:
            raise _Found(
                "seal_coverage",
                f"payload.first_seq must follow the previous seal (seq {want_first})",
                str(want_first),
                str(first_seq),
            )
        if v["prev_hash"] != self._last_event_hash:
            raise _Found(
                "seal_prev_hash",
                f"the seal's prev_hash is not the hash of the event at seq {seq}",
                self._last_event_hash,
                v["prev_hash"],
            )
        if prev_seal != self._prev_seal:
            raise _Found(
                "seal_link",
                "payload.prev_seal is not the hash of the previous seal",
                self._prev_seal,
                prev_seal,
            )
        key = self._keys.get(key_id)
        if key is None:
            raise _Found(
                "unknown_key", f"no public key with key_id {key_id}", "a known key_id", key_id
            )
        try:
            key.verify(bytes.fromhex(signature), bytes.fromhex(digest))
        except InvalidSignature:
            raise _Found(
                "bad_signature",
                f"the signature does not verify under key {key_id}",
                f"a valid Ed25519 signature by {key_id}",
                signature,
            ) from None
        if key_id not in self._keys_used:
            self._keys_used.append(key_id)
        self._seals += 1
        self._prev_seal = digest
        self._last_seal_seq = seq
        self._last_was_seal = True


def _hashcore() -> Any:
    if os.environ.get("AGENT_CHAIN_PURE_PYTHON"):
        return None
    try:
        module = importlib.import_module("hashcore")
    except ImportError:
        return None
    return module if hasattr(module, "ChainVerifier") else None


def new_verifier(public_keys: Mapping[str, bytes], *, backend: str = "auto") -> Any:
    """A chain verifier: hashcore's when importable (`backend` "auto" or
    "hashcore"), else this module's ("python"). Both have feed, feed_ndjson,
    finish and records, and report the same problems."""
    hc = _hashcore() if backend in ("auto", "hashcore") else None
    if backend == "hashcore" and hc is None:
        raise RuntimeError("hashcore is not importable")
    if hc is not None:
        return hc.ChainVerifier(dict(public_keys))
    return ChainVerifier(public_keys)


def verify_chain(
    records: Iterable[bytes], public_keys: Mapping[str, bytes], *, backend: str = "auto"
) -> Any:
    v = new_verifier(public_keys, backend=backend)
    v.feed(list(records))
    return v.finish()
