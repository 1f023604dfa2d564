"""The evidence bundle: its format, its export, and its offline check (PROTOCOL §6).

One file: a JSON header line naming the session and the public keys that signed
its seals, then the session's records, one a line, exactly as replay returns
them. `export` writes it from storage through a cursor; checking it needs no
database and no network, reads the file in chunks (bounded memory whatever the
session's length) and names the first record that does not hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import hashcore

from ..storage import sessions
from ..storage.database import Database

log = logging.getLogger(__name__)

FORMAT = "agent-chain-evidence/1"
# A header is a few hundred bytes per key; anything far beyond is not one.
_MAX_HEADER = 1024 * 1024
_CHUNK = 1024 * 1024
_EXCERPT = 2000

Progress = Callable[[int, int, int], None]
"""progress(records read, bytes read, total bytes)."""


class BundleError(ValueError):
    """The header is not one this module writes."""


@dataclass(frozen=True)
class BundleKey:
    key_id: str
    public_key: bytes
    alg: str = "Ed25519"


@dataclass(frozen=True)
class BundleHeader:
    session_id: str
    tenant: str
    exported_at: str
    keys: tuple[BundleKey, ...]
    events: int
    seals: int
    head_hash: str

    def to_line(self) -> bytes:
        body = {
            "format": FORMAT,
            "session_id": self.session_id,
            "tenant": self.tenant,
            "exported_at": self.exported_at,
            "keys": [
                {"key_id": k.key_id, "alg": k.alg, "public_key": k.public_key.hex()}
                for k in self.keys
            ],
            "events": self.events,
            "seals": self.seals,
            "head_hash": self.head_hash,
        }
        return json.dumps(body, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> BundleHeader:
        try:
            raw = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"the first line is not a JSON header ({exc})") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BundleError(f'the first line is not a header with "format": "{FORMAT}"')
        try:
            keys = tuple(
                BundleKey(_str(k, "key_id"), bytes.fromhex(_str(k, "public_key")), _str(k, "alg"))
                for k in raw["keys"]
            )
            return cls(
                session_id=_str(raw, "session_id"),
                tenant=_str(raw, "tenant"),
                exported_at=_str(raw, "exported_at"),
                keys=keys,
                events=_count(raw, "events"),
                seals=_count(raw, "seals"),
                head_hash=_str(raw, "head_hash"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"the header is incomplete or malformed ({exc})") from exc


def _str(obj: Any, name: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise TypeError(f"'{name}' must be a string")
    return value


def _count(obj: Any, name: str) -> int:
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"'{name}' must be a non-negative integer")
    return value


def key_id_of(public_key: bytes) -> str:
    """PROTOCOL §4: the first 16 hex chars of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class BundleWriter:
    """Writes a bundle: the header, then records as they are read from storage."""

    def __init__(self, out: IO[bytes], header: BundleHeader) -> None:
        self._out = out
        self.records = 0
        out.write(header.to_line())

    def write(self, records: list[bytes]) -> None:
        self._out.write(b"".join(r + b"\n" for r in records))
        self.records += len(records)


# ---- the offline check ----------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """What does not hold. `line` is the bundle's line (1 = the header), or 0
    when the bundle as a whole is at fault."""

    line: int
    reason: str
    detail: str
    seq: int | None = None
    kind: str | None = None
    expected: str | None = None
    found: str | None = None
    record: str | None = None


@dataclass(frozen=True)
class BundleReport:
    header: BundleHeader | None
    records: int = 0
    events: int = 0
    seals: int = 0
    keys_used: list[str] = field(default_factory=list)
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def text(self) -> str:
        """The report for a person: what was checked, and exactly what failed."""
        keys = ", ".join(self.keys_used) or "none"
        where = (
            f"session {self.header.session_id} (tenant {self.header.tenant})"
            if self.header
            else "no session"
        )
        f = self.failure
        if f is None:
            return (
                f"OK: {self.records:,} records ({self.events:,} events, {self.seals:,} seals) "
                f"verified; {where}; keys used: {keys}"
            )
        at = f"line {f.line:,}" if f.line else "the bundle as a whole"
        if f.seq is not None:
            at += f" (seq {f.seq}, {f.kind})"
        lines = [f"FAILED at {at}: {f.reason} — {f.detail}"]
        if f.expected is not None or f.found is not None:
            lines.append(f"  expected: {f.expected}")
            lines.append(f"  found:    {f.found}")
        if f.record is not None:
            lines.append(f"  record:   {f.record}")
        lines.append(
            f"{where}: {self.records:,} records read; before the failure "
            f"{self.events:,} events and {self.seals:,} seals verified; keys used: {keys}"
        )
        return "\n".join(lines)


def verify_bundle(
    path: Path, *, progress: Progress | None = None, chunk_bytes: int = _CHUNK
) -> BundleReport:
    """Check the bundle at `path` against the keys in its own header."""
    total = path.stat().st_size
    with path.open("rb") as src:
        first = src.readline(_MAX_HEADER)
        try:
            if not first.endswith(b"\n"):
                raise BundleError("the first line is not a complete header line")
            header = BundleHeader.from_line(first)
            keys = _public_keys(header)
        except BundleError as exc:
            return BundleReport(None, failure=Failure(1, "bad_header", str(exc)))

        verifier = hashcore.ChainVerifier(keys)
        mismatch: Failure | None = None
        pending = last = b""
        done = len(first)
        while chunk := src.read(chunk_bytes):
            done += len(chunk)
            pending += chunk
            cut = pending.rfind(b"\n")
            if cut < 0:
                continue  # one record longer than a chunk
            lines = pending[:cut].split(b"\n")
            pending = pending[cut + 1 :]
            if verifier.records == 0:
                mismatch = _session_mismatch(header, lines[0])
                if mismatch is not None:
                    break
            verifier.feed(lines)
            last = lines[-1]
            if progress is not None:
                progress(verifier.records, done, total)
        if pending and mismatch is None:
            if verifier.records == 0:
                mismatch = _session_mismatch(header, pending)
            verifier.feed([pending])
            last = pending
    report = verifier.finish()
    keys_used = list(report.keys_used)
    counts = {"records": report.records, "events": report.events, "seals": report.seals}
    if mismatch is not None:
        return BundleReport(header, keys_used=keys_used, failure=mismatch, **counts)
    failure = _chain_failure(report.problem) or _header_mismatch(header, report, last)
    if failure is not None and failure.line > 1:
        failure = _with_record(failure, path)
    return BundleReport(header, keys_used=keys_used, failure=failure, **counts)


def _public_keys(header: BundleHeader) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for k in header.keys:
        if k.alg != "Ed25519" or len(k.public_key) != 32:
            raise BundleError(f"key {k.key_id} is not a raw 32-byte Ed25519 public key")
        if key_id_of(k.public_key) != k.key_id:
            raise BundleError(
                f"key {k.key_id}: its key_id is not the SHA-256 prefix of its public key "
                f"({key_id_of(k.public_key)})"
            )
        keys[k.key_id] = k.public_key
    return keys


def _session_mismatch(header: BundleHeader, line: bytes) -> Failure | None:
    """The records must be the header's session (hashcore checks they agree
    with each other, from the first one on)."""
    try:
        found = json.loads(line).get("session_id")
    except (ValueError, AttributeError):
        return None  # not a record at all: hashcore names it
    if found == header.session_id:
        return None
    return Failure(
        2,
        "session_mismatch",
        "the first record belongs to another session than the header names",
        expected=header.session_id,
        found=str(found),
        record=_excerpt(line),
    )


def _chain_failure(problem: hashcore.Problem | None) -> Failure | None:
    if problem is None:
        return None
    return Failure(
        problem.line + 1 if problem.line else 0,
        problem.reason,
        problem.detail,
        seq=problem.seq,
        kind=problem.kind,
        expected=problem.expected,
        found=problem.found,
    )


def _header_mismatch(
    header: BundleHeader, report: hashcore.ChainReport, last: bytes
) -> Failure | None:
    """A valid chain cut short still verifies: the header's counts and head catch it.
    `last` is the last record, a seal (hashcore checked) pinned to the head event."""
    if (report.events, report.seals) != (header.events, header.seals):
        return Failure(
            0,
            "count_mismatch",
            "the records do not add up to what the header announces (records missing "
            "or added at the end?)",
            expected=f"{header.events} events, {header.seals} seals",
            found=f"{report.events} events, {report.seals} seals",
        )
    head = json.loads(last)["prev_hash"]
    if head != header.head_hash:
        return Failure(
            0,
            "head_mismatch",
            "the last seal is not pinned to the head the header announces",
            expected=header.head_hash,
            found=head,
        )
    return None


def _with_record(failure: Failure, path: Path) -> Failure:
    """Attach the text of the failing line (a second pass, only on failure)."""
    with path.open("rb") as src:
        for number, line in enumerate(src, start=1):
            if number == failure.line:
                return replace(failure, record=_excerpt(line.rstrip(b"\n")))
    return failure


def _excerpt(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace")
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + f"… ({len(line):,} bytes)"


class ProgressPrinter:
    """A progress callback that prints at most once per `every` seconds."""

    def __init__(self, out: Callable[[str], None], verb: str, every: float = 1.0) -> None:
        self._out = out
        self._verb = verb
        self._every = every
        self._next = time.monotonic() + every

    def __call__(self, records: int, done: int, total: int) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        share = 100 * done / total if total else 100.0
        self._out(f"{self._verb} {records:,} records ({share:.0f}%)")


_EXPORT_CHUNK = 5000


async def export(
    db: Database,
    session_id: str,
    tenant: str | None,
    out: IO[bytes],
    progress: Progress,
) -> BundleHeader | str:
    """Write the session's bundle to `out`: its header, or why there is none.

    Reads the head, then the chain up to that head through a cursor in chunks,
    so memory does not grow with the session's length."""
    holders = await sessions.tenants_holding(db, session_id)
    chosen = [h for h in holders if tenant is None or h[1] == tenant]
    if not chosen:
        under = f" under tenant {tenant}" if tenant else ""
        return f"no session {session_id}{under}"
    if len(chosen) > 1:
        names = ", ".join(name for _, name in chosen)
        return f"session {session_id} exists under several tenants ({names}): pass --tenant"
    tenant_id, tenant_name = chosen[0]
    head = await sessions.head(db, tenant_id, session_id)
    if head is None:
        return f"no session {session_id} under tenant {tenant_name}"
    keys, missing = await sessions.seal_keys(db, tenant_id, session_id, head.next_seq)
    if missing:
        log.warning("no public key stored for %s: its seals will not verify", ", ".join(missing))
    header = BundleHeader(
        session_id=session_id,
        tenant=tenant_name,
        exported_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        keys=tuple(BundleKey(k.key_id, k.public_key) for k in keys),
        events=head.next_seq,
        seals=head.seal_count,
        head_hash=head.head_hash,
    )
    total = head.next_seq + head.seal_count
    writer = BundleWriter(out, header)
    async with db.cursor(
        sessions.CHAIN, tenant_id, session_id, head.next_seq, chunk=_EXPORT_CHUNK
    ) as fetch:
        while rows := await fetch():
            writer.write([row[0] for row in rows])
            progress(writer.records, writer.records, total)
    if writer.records != total:
        return f"read {writer.records} records where the head announces {total}"
    return header
