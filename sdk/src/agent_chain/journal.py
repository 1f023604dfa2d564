"""The durable journal of one session: what `record` returned is on disk.

Three files per session in the journal folder, all append-only lines:

- ``<session_id>.events.ndjson``: every event, one JCS line each, exactly as
  replay returns it; written with one ``write()`` per event before `record`
  returns (so a process crash loses nothing), fsynced at an interval, on
  flush/close, or after every event;
- ``<session_id>.seals.ndjson``: the seals the server returned, each verified
  before it was written, in the replay line format;
- ``<session_id>.keys.json``: the public keys that verified those seals, so
  the journal can be audited offline (``python -m agent_chain verify``).

The events file is the lock (``flock``, exclusive, non-blocking): one writer
per session across processes. Opening a journal re-hashes every line, checks
seq and links, cuts a torn last line, re-verifies the seals file, and returns
where the chain stands and what the server has not acknowledged yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .bundle import key_id_of
from .errors import JournalCorruptError, JournalError, JournalLockedError
from .receipts import Receipt, SealError, check_seal
from .records import ZERO_HASH, BadLine, parse_event_line

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("agent_chain")

EVENTS_SUFFIX = ".events.ndjson"
SEALS_SUFFIX = ".seals.ndjson"
KEYS_SUFFIX = ".keys.json"
_CHUNK = 1024 * 1024


def user_data_dir() -> Path:
    """The per-user data folder (XDG on Linux), computed without platformdirs."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".local" / "share"
    return base / "agent-chain"


_API_KEY = re.compile(r"csk_([0-9a-f]{16})_")


def default_journal_dir(base_url: str, api_key: str) -> Path:
    """One folder per server and API key, so that a journal resumed by a later
    client goes to the server and tenant it was recorded for. The key's secret
    never reaches the file system: only its public id, or a digest."""
    m = _API_KEY.match(api_key)
    key_part = m.group(1) if m else hashlib.sha256(api_key.encode()).hexdigest()[:16]
    url = base_url.rstrip("/")
    parts = urlsplit(url)
    host = re.sub(r"[^A-Za-z0-9.-]", "_", f"{parts.hostname or 'server'}-{parts.port or ''}")
    digest = hashlib.sha256(f"{url}\n{key_part}".encode()).hexdigest()[:12]
    return user_data_dir() / "journals" / f"{host.strip('-')}-{digest}"


@dataclass
class ResumePoint:
    """Where a journal stands once opened."""

    next_seq: int
    last_hash: str
    end: int
    """Size of the events file: where the next event goes."""
    acked_seq: int
    """Last seq covered by a verified seal; -1 if none."""
    acked_offset: int
    """Offset of the first event not covered by a verified seal."""
    anchor: Receipt | None
    """The last verified seal."""
    cut_bytes: int = 0
    """Bytes cut off the end (a torn last line)."""

    @property
    def pending_events(self) -> int:
        return self.next_seq - self.acked_seq - 1


class Journal:
    """The files of one session; the events file held under an exclusive lock."""

    def __init__(self, directory: Path, session_id: str) -> None:
        self.directory = directory
        self.session_id = session_id
        self.events_path = directory / f"{session_id}{EVENTS_SUFFIX}"
        self.seals_path = directory / f"{session_id}{SEALS_SUFFIX}"
        self.keys_path = directory / f"{session_id}{KEYS_SUFFIX}"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = not self.events_path.exists()
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(self.events_path, flags, 0o600)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise JournalLockedError(
                        f"session {session_id} is being written by another client or process "
                        f"(its journal {self.events_path} is locked)"
                    ) from None
            self.seals_fd = os.open(self.seals_path, flags, 0o600)
        except BaseException:
            os.close(self.fd)
            raise
        if created:
            _fsync_dir(directory)
        self.keys: dict[str, bytes] = _read_keys(self.keys_path)
        self.closed = False

    # ---- writing -----------------------------------------------------------

    def append(self, data: bytes, end: int) -> None:
        """Appends `data` (whole lines) at `end`, the current size; a failed
        write leaves no partial line behind."""
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, end)
            raise JournalError(f"cannot write the journal {self.events_path}: {exc}") from exc

    def fsync(self) -> None:
        os.fsync(self.fd)

    def append_seal(self, receipt: Receipt, public_key: bytes) -> None:
        if receipt.key_id not in self.keys:
            self.keys[receipt.key_id] = public_key
            _write_keys(self.keys_path, self.keys)
        os.write(self.seals_fd, receipt.record + b"\n")

    def fsync_seals(self) -> None:
        os.fsync(self.seals_fd)

    # ---- reading -----------------------------------------------------------

    def pread(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise JournalError(f"{self.events_path}: short read at byte {offset}")
        return data

    def read_lines(
        self, offset: int, end: int, max_events: int, max_bytes: int
    ) -> tuple[list[bytes], int]:
        """Whole lines from `offset` (not beyond `end`): at most `max_events`,
        and at most `max_bytes` unless the first line alone is longer."""
        lines: list[bytes] = []
        size = 0
        want = min(end - offset, max_bytes + 1)
        buf = os.pread(self.fd, want, offset) if want > 0 else b""
        pos = 0
        while len(lines) < max_events:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if lines or offset + len(buf) >= end:
                    break
                # One line longer than max_bytes: read it whole.
                buf += os.pread(self.fd, end - offset - len(buf), offset + len(buf))
                continue
            line = buf[pos:nl]
            if lines and size + len(line) + 1 > max_bytes:
                break
            lines.append(line)
            size += len(line) + 1
            pos = nl + 1
        return lines, offset + pos

    def scan_lines(self, offset: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset, line) for every line from `offset`; a last line without
        newline is yielded with its newline missing (the caller cuts it)."""
        pending = b""
        pos = offset
        while chunk := os.pread(self.fd, _CHUNK, pos + len(pending)):
            pending += chunk
            start = 0
            while (nl := pending.find(b"\n", start)) >= 0:
                yield pos, pending[start : nl + 1]
                pos += nl + 1 - start
                start = nl + 1
            pending = pending[start:]
        if pending:
            yield pos, pending

    def resume(self) -> ResumePoint:
        """Re-hashes every line, checks seq and links, cuts a torn last line and
        re-verifies the seals: where the chain stands."""
        seals = self._read_seals()
        seal_seqs = {r.seq: r for r in seals}
        seal_hashes: dict[int, str] = {}
        anchor_seq = seals[-1].seq if seals else -1
        next_seq, last_hash = 0, ZERO_HASH
        end = 0
        acked_offset = 0
        cut = 0
        size = os.fstat(self.fd).st_size
        for offset, line in self.scan_lines():
            try:
                if not line.endswith(b"\n"):
                    raise BadLine("torn: no newline")
                # Acknowledged lines are re-hashed and linked; the others, which
                # will be sent, are also checked as the server will check them.
                ev = parse_event_line(line[:-1], canonical_check=next_seq > anchor_seq)
                if ev.session_id != self.session_id:
                    raise BadLine(f"belongs to session {ev.session_id}")
                if ev.seq != next_seq or ev.prev_hash != last_hash:
                    raise BadLine(f"seq {ev.seq} does not continue the chain at seq {next_seq}")
            except BadLine as exc:
                if offset + len(line) < size:
                    raise JournalCorruptError(
                        f"{self.events_path}: the line at byte {offset} (seq {next_seq}) "
                        f"does not hold ({exc}); only a torn last line can be cut"
                    ) from None
                cut = size - offset
                log.warning(
                    "journal %s: cutting %d bytes of a torn last line (%s)",
                    self.events_path,
                    cut,
                    exc,
                )
                os.ftruncate(self.fd, offset)
                os.fsync(self.fd)
                break
            if ev.seq in seal_seqs:
                seal_hashes[ev.seq] = ev.hash
            next_seq, last_hash = ev.seq + 1, ev.hash
            end = offset + len(line)
            if ev.seq == anchor_seq:
                acked_offset = end
        # A seal must pin an event of ours; the first that does not ends the
        # usable seals (its events are then resent and resealed).
        anchor: Receipt | None = None
        for r in seals:
            if seal_hashes.get(r.seq) != r.prev_hash:
                raise JournalCorruptError(
                    f"{self.seals_path}: the seal at seq {r.seq} does not pin the journal's "
                    "event at that seq; the journal lost events the server sealed"
                )
            anchor = r
        if anchor is None:
            acked_offset = 0
        return ResumePoint(
            next_seq=next_seq,
            last_hash=last_hash,
            end=end,
            acked_seq=anchor.seq if anchor else -1,
            acked_offset=acked_offset,
            anchor=anchor,
            cut_bytes=cut,
        )

    def _read_seals(self) -> list[Receipt]:
        """The seals file's receipts, re-verified; a line that does not hold and
        everything after it is cut (those seals are fetched again by resending)."""
        out: list[Receipt] = []
        prev_seq, prev_hash = -1, ZERO_HASH
        offset = 0
        with open(self.seals_path, "rb") as f:
            for line in f:
                try:
                    if not line.endswith(b"\n"):
                        raise SealError("torn line")
                    r = check_seal(json.loads(line), self.session_id, self.keys)
                    if r.record != line[:-1]:
                        raise SealError("not canonical")
                    if r.first_seq != prev_seq + 1 or r.prev_seal != prev_hash:
                        raise SealError("does not continue the seal chain")
                except (SealError, KeyError, ValueError) as exc:
                    log.warning(
                        "journal %s: cutting seals from byte %d (%s); they will be "
                        "obtained again by resending",
                        self.seals_path,
                        offset,
                        exc,
                    )
                    os.ftruncate(self.seals_fd, offset)
                    break
                out.append(r)
                prev_seq, prev_hash = r.seq, r.hash
                offset += len(line)
        return out

    # ---- lifetime ----------------------------------------------------------

    def close(self) -> None:
        """Fsyncs and closes; releases the lock."""
        if self.closed:
            return
        self.closed = True
        try:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
                os.fsync(self.seals_fd)
        finally:
            os.close(self.seals_fd)
            os.close(self.fd)

    def abandon(self) -> None:
        """Closes the file descriptors without fsync (in a forked child: the
        parent still holds the lock and owns the files)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self.seals_fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def remove(self) -> None:
        """Deletes the files (the session is closed and fully acknowledged);
        unlinked while still locked, so no other writer can pick them up."""
        for p in (self.seals_path, self.keys_path, self.events_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.close()


def journal_sessions(directory: Path) -> list[str]:
    """Session ids that have an events file in `directory`."""
    if not directory.is_dir():
        return []
    return sorted(
        p.name[: -len(EVENTS_SUFFIX)] for p in directory.glob(f"*{EVENTS_SUFFIX}") if p.is_file()
    )


def _read_keys(path: Path) -> dict[str, bytes]:
    try:
        body = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    keys: dict[str, bytes] = {}
    for k in body.get("keys", []) if isinstance(body, dict) else []:
        try:
            raw = bytes.fromhex(k["public_key"])
        except (KeyError, TypeError, ValueError):
            continue
        if len(raw) == 32 and key_id_of(raw) == k.get("key_id"):
            keys[k["key_id"]] = raw
    return keys


def _write_keys(path: Path, keys: dict[str, bytes]) -> None:
    body = {
        "keys": [
            {"key_id": kid, "alg": "Ed25519", "public_key": raw.hex()}
            for kid, raw in sorted(keys.items())
        ]
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(json.dumps(body, indent=1).encode() + b"\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
