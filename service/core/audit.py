"""What an auditor checks (PROTOCOL §6), offline: an evidence bundle against the
keys in its own header, and a chain against the head it should reach.

No database and no network: the bundle is read in chunks (bounded memory
whatever the session's length) and the first record that does not hold is
named. The server's `/verify` applies the same head rule (`check_head`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import hashcore

from .bundle import BundleError, BundleHeader, Progress, key_id_of

# A header is a few hundred bytes per key; anything far beyond is not one.
_MAX_HEADER = 1024 * 1024
_CHUNK = 1024 * 1024
_EXCERPT = 2000


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
    failure = _chain_failure(report.problem) or check_head(
        report, header.events, header.seals, header.head_hash, last
    )
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


def check_head(
    report: hashcore.ChainReport, events: int, seals: int, head_hash: str, last: bytes
) -> Failure | None:
    """A valid chain cut short still verifies: the head it was read at catches it.

    `events`, `seals` and `head_hash` describe that head (a bundle's header, or
    the session's head row); `last` is the last record, a seal (hashcore checked
    it) pinned to the head event. Call it only on a chain without a problem.
    """
    if (report.events, report.seals) != (events, seals):
        return Failure(
            0,
            "count_mismatch",
            "the records do not add up to the head they should reach (records missing "
            "or added at the end?)",
            expected=f"{events} events, {seals} seals",
            found=f"{report.events} events, {report.seals} seals",
        )
    found = json.loads(last)["prev_hash"] if last else None
    if found != head_hash:
        return Failure(
            0,
            "head_mismatch",
            "the last seal is not pinned to the head hash it should reach",
            expected=head_hash,
            found=found,
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
