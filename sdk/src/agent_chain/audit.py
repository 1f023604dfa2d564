"""What an auditor checks (PROTOCOL §6), offline: an evidence bundle against
the keys in its own header, a client's journal against the keys it recorded,
and a chain against the head it should reach.

No database and no network; files are read in chunks (bounded memory whatever
the session's length) and the first record that does not hold is named. Runs
on this package alone (pure Python), or on hashcore's `ChainVerifier` when it
is importable, with the same results. The service's ``verify`` command and its
``/verify`` route use this module (`verify_bundle`, `check_head`, `Failure`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .bundle import BundleError, BundleHeader, Progress, key_id_of
from .journal import EVENTS_SUFFIX, KEYS_SUFFIX, SEALS_SUFFIX
from .records import ZERO_HASH
from .verifier import ReportLike, new_verifier

# A header is a few hundred bytes per key; anything far beyond is not one.
_MAX_HEADER = 1024 * 1024
_CHUNK = 1024 * 1024
_EXCERPT = 2000


@dataclass(frozen=True)
class Failure:
    """What does not hold. `line` is the file's line (1 = a bundle's header),
    or 0 when the file as a whole is at fault."""

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
        where = (
            f"session {self.header.session_id} (tenant {self.header.tenant})"
            if self.header
            else "no session"
        )
        return _text(
            "bundle", where, self.records, self.events, self.seals, self.keys_used, self.failure
        )


@dataclass(frozen=True)
class JournalReport:
    """A journal checked: the sealed part as an auditor checks a replay, the
    events recorded after the last seal as a chain (`unsealed` of them)."""

    session_id: str
    records: int = 0
    events: int = 0
    seals: int = 0
    unsealed: int = 0
    keys_used: list[str] = field(default_factory=list)
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def exit_code(self) -> int:
        """0: holds and fully sealed; 2: holds, some events not sealed yet; 1: fails."""
        return 1 if self.failure else 2 if self.unsealed else 0

    def text(self) -> str:
        out = _text(
            "journal",
            f"journal of session {self.session_id}",
            self.records,
            self.events,
            self.seals,
            self.keys_used,
            self.failure,
        )
        if self.failure is None and self.unsealed:
            out += (
                f"\nNOT SEALED: the last {self.unsealed:,} event(s) chain correctly but the "
                "server has not sealed them yet (not acknowledged)"
            )
        return out


def _text(
    noun: str,
    where: str,
    records: int,
    events: int,
    seals: int,
    keys_used: list[str],
    f: Failure | None,
) -> str:
    keys = ", ".join(keys_used) or "none"
    if f is None:
        return (
            f"OK: {records:,} records ({events:,} events, {seals:,} seals) "
            f"verified; {where}; keys used: {keys}"
        )
    at = f"line {f.line:,}" if f.line else f"the {noun} as a whole"
    if f.seq is not None:
        at += f" (seq {f.seq}, {f.kind})"
    lines = [f"FAILED at {at}: {f.reason} — {f.detail}"]
    if f.expected is not None or f.found is not None:
        lines.append(f"  expected: {f.expected}")
        lines.append(f"  found:    {f.found}")
    if f.record is not None:
        lines.append(f"  record:   {f.record}")
    lines.append(
        f"{where}: {records:,} records read; before the failure "
        f"{events:,} events and {seals:,} seals verified; keys used: {keys}"
    )
    return "\n".join(lines)


# ---- bundles --------------------------------------------------------------------


def verify_bundle(
    path: Path,
    *,
    progress: Progress | None = None,
    chunk_bytes: int = _CHUNK,
    backend: str = "auto",
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

        verifier = new_verifier(keys, backend=backend)
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
    failure = _chain_failure(report.problem, offset=1) or check_head(
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
    """The records must be the header's session (the verifier checks they
    agree with each other, from the first one on)."""
    try:
        found = json.loads(line).get("session_id")
    except (ValueError, AttributeError):
        return None  # not a record at all: the verifier names it
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


def _chain_failure(problem: Any, *, offset: int) -> Failure | None:
    """A verifier's problem (ours or hashcore's) as a Failure; `offset` is the
    number of lines before the first record."""
    if problem is None:
        return None
    return Failure(
        problem.line + offset if problem.line else 0,
        problem.reason,
        problem.detail,
        seq=problem.seq,
        kind=problem.kind,
        expected=problem.expected,
        found=problem.found,
    )


def check_head(
    report: ReportLike, events: int, seals: int, head_hash: str, last: bytes
) -> Failure | None:
    """A valid chain cut short still verifies: the head it was read at catches it.

    `events`, `seals` and `head_hash` describe that head (a bundle's header, or
    the session's head row); `last` is the last record, a seal (the verifier
    checked it) pinned to the head event. Call it only on a chain without a problem.
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


def _with_record(failure: Failure, path: Path, lines: Iterator[bytes] | None = None) -> Failure:
    """Attach the text of the failing line (a second pass, only on failure)."""
    with path.open("rb") as src:
        for number, line in enumerate(lines or src, start=1):
            if number == failure.line:
                return replace(failure, record=_excerpt(line.rstrip(b"\n")))
    return failure


def _excerpt(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace")
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + f"… ({len(line):,} bytes)"


# ---- journals -------------------------------------------------------------------


def journal_paths(path: Path) -> tuple[str, Path, Path, Path]:
    """(session_id, events, seals, keys) of a journal, from any of its files."""
    name = path.name
    for suffix in (EVENTS_SUFFIX, SEALS_SUFFIX, KEYS_SUFFIX):
        if name.endswith(suffix):
            sid = name[: -len(suffix)]
            d = path.parent
            return (
                sid,
                d / f"{sid}{EVENTS_SUFFIX}",
                d / f"{sid}{SEALS_SUFFIX}",
                d / f"{sid}{KEYS_SUFFIX}",
            )
    raise ValueError(f"{path} is not a journal file (*{EVENTS_SUFFIX}, *{SEALS_SUFFIX})")


def _read_keys(path: Path) -> dict[str, bytes]:
    try:
        body = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    return keys_from_listing(body)


def keys_from_listing(body: Any) -> dict[str, bytes]:
    """``{"keys": [{key_id, alg, public_key}, ...]}`` (GET /v1/keys, a journal's
    keys file) -> key_id -> raw public key."""
    keys: dict[str, bytes] = {}
    for k in body.get("keys", []) if isinstance(body, dict) else []:
        raw = bytes.fromhex(k["public_key"])
        if key_id_of(raw) != k["key_id"]:
            raise ValueError(f"key {k['key_id']}: not the SHA-256 prefix of its public key")
        keys[k["key_id"]] = raw
    return keys


def _merged(events: Path, seals: Path) -> Iterator[bytes]:
    """Events and seals as replay orders them: by seq, an event before its seal."""
    with seals.open("rb") as s:
        seal_lines = [ln.rstrip(b"\n") for ln in s if ln.strip()]
    seal_seqs: list[int | None] = []
    for ln in seal_lines:
        try:
            seq = json.loads(ln).get("seq")
            seal_seqs.append(seq if isinstance(seq, int) else None)
        except (ValueError, AttributeError):
            seal_seqs.append(None)
    i = 0
    with events.open("rb") as src:
        for n, line in enumerate(src):
            yield line.rstrip(b"\n")
            while i < len(seal_lines) and (seal_seqs[i] is None or seal_seqs[i] == n):
                yield seal_lines[i]
                i += 1
    yield from seal_lines[i:]


def verify_journal(
    path: Path,
    *,
    public_keys: Mapping[str, bytes] | None = None,
    backend: str = "auto",
) -> JournalReport:
    """Check a client journal (events and the seals beside them) offline, with
    the keys recorded beside it unless `public_keys` is given."""
    sid, events, seals, keys_path = journal_paths(path)
    try:
        keys = dict(public_keys) if public_keys is not None else _read_keys(keys_path)
    except (ValueError, KeyError, TypeError) as exc:
        return JournalReport(sid, failure=Failure(0, "bad_keys", f"{keys_path}: {exc}"))
    if not events.exists():
        return JournalReport(sid, failure=Failure(0, "missing", f"{events} does not exist"))
    if not seals.exists():
        seals.touch()
    verifier = new_verifier(keys, backend=backend)
    batch: list[bytes] = []
    for line in _merged(events, seals):
        batch.append(line)
        if len(batch) >= 1000:
            verifier.feed(batch)
            batch = []
    verifier.feed(batch)
    report = verifier.finish()
    p = report.problem
    unsealed = 0
    if p is not None and p.reason in ("last_not_seal", "empty") and report.seals == 0:
        unsealed = report.events
        p = None if report.events else p
    elif p is not None and p.reason == "last_not_seal":
        unsealed = _unsealed(seals, report.events)
        p = None
    failure = _chain_failure(p, offset=0)
    if failure is not None and failure.line > 0:
        lines = list(_merged(events, seals))
        if failure.line <= len(lines):
            failure = replace(failure, record=_excerpt(lines[failure.line - 1]))
    if failure is None and unsealed == 0 and report.events == 0:
        failure = Failure(0, "empty", "the journal holds no event")
    return JournalReport(
        sid,
        records=report.records,
        events=report.events,
        seals=report.seals,
        unsealed=unsealed,
        keys_used=list(report.keys_used),
        failure=failure,
    )


def _unsealed(seals: Path, events: int) -> int:
    last = -1
    with seals.open("rb") as s:
        for ln in s:
            if ln.strip():
                last = json.loads(ln)["seq"]
    return events - 1 - last


def is_bundle(path: Path) -> bool:
    with path.open("rb") as f:
        first = f.readline(_MAX_HEADER)
    try:
        head = json.loads(first)
    except ValueError:
        return False
    return isinstance(head, dict) and "format" in head


__all__ = [
    "ZERO_HASH",
    "BundleReport",
    "Failure",
    "JournalReport",
    "check_head",
    "is_bundle",
    "journal_paths",
    "keys_from_listing",
    "verify_bundle",
    "verify_journal",
]
