"""`Client` and `Session`: the public API.

`Session.record` validates, masks, hashes and journals an event and returns
``(seq, hash)`` without any network I/O; the client's one background thread
(`sender.Sender`) does the rest. Thread-safe; usable from plain threads,
asyncio and trio (`aflush` runs the wait in a worker thread through anyio).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from . import canonical
from ._telemetry import no_instrumentation
from .errors import (
    AgentChainError,
    AuthError,
    InvalidEventError,
    JournalFullError,
    JournalLockedError,
    SealVerificationError,
    SendError,
    SessionClosedError,
    SessionForkedError,
    SessionStoppedError,
    TransportError,
)
from .journal import Journal, ResumePoint, default_journal_dir, journal_sessions
from .receipts import KeyRing, Receipt, SealError, parse_keys
from .records import (
    MAX_SEQ,
    check_kind,
    check_session_id,
    event_line,
    hashed_bytes,
    new_session_id,
    utc_timestamp,
)
from .sender import BODY_OVERHEAD, Sender, start_thread
from .state import SessionState

log = logging.getLogger("agent_chain")

Mask = Callable[[str, dict[str, Any]], Mapping[str, Any]]
OnError = Callable[[AgentChainError], None]

MASK_FAILED_KIND_NOTE = "the mask raised or returned an invalid payload; the payload was withheld"


@dataclass(frozen=True)
class Config:
    base_url: str
    journal_dir: Path
    fsync_every_record: bool
    fsync_interval: float
    linger: float
    max_batch_events: int
    max_batch_bytes: int
    max_event_bytes: int
    max_pending_bytes: int
    full_timeout: float
    keep_journal: bool
    exit_timeout: float
    request_timeout: float
    backoff_base: float
    backoff_max: float


@dataclass(frozen=True)
class SessionStatus:
    session_id: str
    state: str
    """open, closing (closed, events still to acknowledge), closed, finished, stopped."""
    next_seq: int
    acknowledged_seq: int
    """Last seq covered by a verified seal; -1 if none."""
    pending_events: int
    pending_bytes: int
    last_error: AgentChainError | None
    stopped_by: AgentChainError | None


@dataclass(frozen=True)
class Status:
    sender_running: bool
    sessions: tuple[SessionStatus, ...]
    recorded: int
    sent: int
    acknowledged: int
    pending_events: int
    pending_bytes: int
    errors: int
    last_error: AgentChainError | None


@dataclass(frozen=True)
class FlushReport:
    """What `flush` achieved: `complete` when nothing is left to acknowledge."""

    complete: bool
    sent: int
    """Events sent at least once by this client."""
    acknowledged: int
    """Events covered by a seal verified by this client."""
    pending: int
    """Events recorded (or resumed) and not yet acknowledged."""
    last_error: AgentChainError | None
    stopped_sessions: tuple[str, ...] = ()


class Client:
    """One per process: records sessions of agent events, journals them,
    sends them in the background, and verifies every seal.

    `base_url` and `api_key` (scope ``ingest``; ``read`` too to continue a
    session that is not in the local journal) name the service. Events are
    journaled under `journal_dir` (default: a folder per server and key in the
    per-user data folder) before `record` returns; sessions a previous
    process left unacknowledged there are resumed at once (`resume`).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        journal_dir: str | os.PathLike[str] | None = None,
        mask: Mask | None = None,
        on_error: OnError | None = None,
        fsync_every_record: bool = False,
        fsync_interval: float = 0.2,
        linger: float = 0.25,
        max_batch_events: int = 100,
        max_batch_bytes: int = 1024 * 1024,
        max_event_bytes: int | None = None,
        max_pending_bytes: int = 1024 * 1024 * 1024,
        full_timeout: float = 5.0,
        keep_journal: bool = False,
        resume: bool = True,
        exit_timeout: float = 5.0,
        request_timeout: float = 30.0,
        backoff_base: float = 0.2,
        backoff_max: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_event_bytes is None:
            max_event_bytes = max_batch_bytes - BODY_OVERHEAD
        if not 0 < max_event_bytes <= max_batch_bytes - BODY_OVERHEAD:
            raise ValueError("max_event_bytes must fit in a batch of max_batch_bytes")
        if not 1 <= max_batch_events <= 1000:
            raise ValueError("max_batch_events must be in 1..1000 (the server's default cap)")
        self.config = Config(
            base_url=base_url.rstrip("/"),
            journal_dir=Path(journal_dir)
            if journal_dir is not None
            else default_journal_dir(base_url, api_key),
            fsync_every_record=fsync_every_record,
            fsync_interval=fsync_interval,
            linger=linger,
            max_batch_events=max_batch_events,
            max_batch_bytes=max_batch_bytes,
            max_event_bytes=max_event_bytes,
            max_pending_bytes=max_pending_bytes,
            full_timeout=full_timeout,
            keep_journal=keep_journal,
            exit_timeout=exit_timeout,
            request_timeout=request_timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
        )
        self._api_key = api_key
        self._mask = mask
        self._on_error = on_error
        self._transport = transport
        self._init_runtime()
        _CLIENTS.add(self)
        if resume:
            self._resume_all()

    def _init_runtime(self) -> None:
        """Everything a forked child must rebuild."""
        self.cond = threading.Condition()
        self.states: dict[str, SessionState] = {}
        self.stopping = False
        self.closed = False
        self.dirty = False
        self.flush_waiters = 0
        self.recorded = 0
        self.acknowledged = 0
        self.pending_bytes = 0
        self.errors = 0
        self.last_error: AgentChainError | None = None
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self.keyring = KeyRing(self._fetch_keys)

    # ---- sessions -----------------------------------------------------------

    def session(self, session_id: str | None = None) -> Session:
        """A new session (`session_id` None), or the continuation of one: from
        the local journal, else from the server's head (``GET
        /v1/sessions/{id}``, which needs the ``read`` scope); a session id the
        server does not know starts a new chain under that id."""
        self._check_usable()
        explicit = session_id is not None
        if session_id is None:
            session_id = new_session_id()
        check_session_id(session_id)
        with self.cond:
            st = self.states.get(session_id)
            if st is not None and st.has_session and not st.finished:
                raise JournalLockedError(f"session {session_id} is already open in this client")
        if st is not None:
            # Lock order: write_lock, then the condition.
            with st.write_lock, st.io_lock:
                with self.cond:
                    if not st.finished and st.stopped is None and not st.has_session:
                        st.closed = False  # resumed here: the caller takes it over
                        st.has_session = True
                        return Session(self, st)
                    if self.states.get(session_id) is st:
                        del self.states[session_id]
                    self.pending_bytes = sum(max(0, x.pending_bytes) for x in self.states.values())
                if not st.journal.closed:
                    st.journal.close()  # stopped: reopened below for a new attempt
        journal = Journal(self.config.journal_dir, session_id)
        try:
            at = journal.resume()
            if explicit and at.next_seq == 0 and at.anchor is None:
                at = self._continue_from_server(journal, at)
        except BaseException:
            journal.close()
            raise
        st = SessionState(session_id, journal, at)
        st.has_session = True
        self._register(st)
        return Session(self, st)

    def _continue_from_server(self, journal: Journal, at: ResumePoint) -> ResumePoint:
        with no_instrumentation():  # the SDK's own requests make no spans
            return self._continue_from_server_head(journal, at)

    def _continue_from_server_head(self, journal: Journal, at: ResumePoint) -> ResumePoint:
        sid = journal.session_id
        try:
            resp = self.http().get(f"/v1/sessions/{sid}")
        except httpx.HTTPError as exc:
            raise TransportError(
                f"session {sid}: cannot read the server's head to continue it ({exc})",
                session_id=sid,
            ) from exc
        if resp.status_code == 404:
            return at  # a new chain under a chosen id
        if resp.status_code in (401, 403):
            raise AuthError(
                f"session {sid} is not in the local journal; continuing it from the "
                f"server's head needs a key with the 'read' scope ({resp.status_code})",
                session_id=sid,
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise SendError(
                f"session {sid}: GET /v1/sessions/{sid} answered {resp.status_code}",
                session_id=sid,
                status=resp.status_code,
            )
        head = resp.json()
        next_seq, head_hash, seal = head.get("next_seq"), head.get("head_hash"), head["last_seal"]
        if next_seq == 0 or seal is None:
            return at
        try:
            receipt = self.keyring.verify(seal, sid)
        except SealError as exc:
            raise SealVerificationError(
                f"session {sid}: the server's last seal does not verify ({exc})", session_id=sid
            ) from None
        if receipt.seq != next_seq - 1 or receipt.prev_hash != head_hash:
            raise SealVerificationError(
                f"session {sid}: the server's last seal does not pin its head", session_id=sid
            )
        journal.append_seal(receipt, self.keyring.known()[receipt.key_id])
        return ResumePoint(
            next_seq=next_seq,
            last_hash=head_hash,
            end=0,
            acked_seq=receipt.seq,
            acked_offset=0,
            anchor=receipt,
        )

    def _register(self, st: SessionState) -> None:
        with self.cond:
            self.states[st.session_id] = st
            self.pending_bytes += st.pending_bytes
            if st.pending_events > 0:
                st.pending_since = time.monotonic()
            self.cond.notify_all()

    def _resume_all(self) -> None:
        """Sessions a previous client left unacknowledged in the journal folder."""
        for sid in journal_sessions(self.config.journal_dir):
            try:
                check_session_id(sid)
                journal = Journal(self.config.journal_dir, sid)
            except JournalLockedError:
                continue  # a live writer owns it
            except (ValueError, OSError) as exc:
                log.warning("journal of %s not resumed: %s", sid, exc)
                continue
            try:
                at = journal.resume()
            except AgentChainError as exc:
                journal.close()
                self.report(None, exc, loud=True)
                continue
            if at.pending_events <= 0:  # fully acknowledged: nothing to do
                if self.config.keep_journal:
                    journal.close()
                else:
                    journal.remove()
                continue
            st = SessionState(sid, journal, at)
            st.closed = True
            log.info("resuming session %s: %d events to acknowledge", sid, at.pending_events)
            self._register(st)
        with self.cond:
            if any(st.pending_events > 0 for st in self.states.values()):
                self._ensure_sender()

    def _remove_finished(self, sid: str) -> None:
        try:
            j = Journal(self.config.journal_dir, sid)
        except (AgentChainError, OSError):
            return
        try:
            if j.resume().pending_events <= 0:
                j.remove()
                return
        except AgentChainError:
            pass
        j.close()

    # ---- recording (called by Session.record) ----------------------------------

    def _record(
        self, st: SessionState, kind: str, payload: Any, timeout: float | None = None
    ) -> tuple[int, str]:
        if st.pid != os.getpid():
            raise SessionForkedError(
                f"session {st.session_id} was opened in process {st.pid}; this forked "
                f"child ({os.getpid()}) cannot use it. Open a new session in the child "
                "(the client starts clean after fork)"
            )
        kind = check_kind(kind)
        norm = canonical.normalize_payload(payload)
        if self._mask is not None:
            norm = self._apply_mask(kind, norm, st.session_id)
        payload_jcs = canonical.jcs(norm)
        self._wait_for_room(len(payload_jcs) + 400, timeout)
        ts = utc_timestamp()
        with st.write_lock:
            if st.closed:
                raise SessionClosedError(f"session {st.session_id} is closed")
            stopped = st.stopped
            if stopped is not None:
                raise SessionStoppedError(
                    f"session {st.session_id} was stopped: {stopped}", stopped
                )
            seq = st.next_seq
            if seq > MAX_SEQ:
                raise InvalidEventError("seq", "the session reached seq 2^53-1")
            hashed = hashed_bytes(st.session_id, seq, kind, ts, payload_jcs, st.last_hash)
            digest = canonical.sha256_hex(hashed)
            line = event_line(hashed, digest) + b"\n"
            if len(line) - 1 > self.config.max_event_bytes:
                raise InvalidEventError(
                    "too_large",
                    f"the event is {len(line) - 1} bytes as JSON; the cap is "
                    f"{self.config.max_event_bytes}",
                    "payload",
                )
            st.journal.append(line, st.end)
            if self.config.fsync_every_record:
                st.journal.fsync()
            st.next_seq = seq + 1
            st.last_hash = digest
            st.end += len(line)
            with self.cond:
                st.published_next_seq = st.next_seq
                st.published_end = st.end
                self.recorded += 1
                self.pending_bytes += len(line)
                if not self.config.fsync_every_record:
                    st.dirty = self.dirty = True
                if st.pending_since is None:
                    st.pending_since = time.monotonic()
                    self.cond.notify_all()
                elif st.pending_events % self.config.max_batch_events == 0:
                    self.cond.notify_all()
                self._ensure_sender()
        return seq, digest

    def _apply_mask(self, kind: str, payload: dict[str, Any], session_id: str) -> dict[str, Any]:
        assert self._mask is not None
        try:
            return canonical.normalize_payload(self._mask(kind, payload))
        except Exception as exc:  # a mask that fails never makes a gap
            err = InvalidEventError("mask", f"{MASK_FAILED_KIND_NOTE} ({type(exc).__name__})")
            err.__cause__ = exc
            log.warning("session %s, kind %s: %s", session_id, kind, err)
            self.report(None, err)
            return {"agent_chain.mask_error": type(exc).__name__, "note": MASK_FAILED_KIND_NOTE}

    def _wait_for_room(self, size: int, timeout: float | None = None) -> None:
        """The journal's cap on unacknowledged bytes: wait for acknowledgements up
        to `timeout` (default `full_timeout`; 0: not at all), then raise. Never a
        silent drop."""
        cap = self.config.max_pending_bytes
        wait = self.config.full_timeout if timeout is None else max(0.0, timeout)
        with self.cond:
            if self.pending_bytes + size <= cap:
                return
            deadline = time.monotonic() + wait
            while self.pending_bytes + size > cap:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise JournalFullError(
                        f"{self.pending_bytes} bytes wait for acknowledgement (cap "
                        f"max_pending_bytes={cap}) and none came within "
                        f"{wait} s; the event was NOT recorded"
                        + (f"; last error: {self.last_error}" if self.last_error else "")
                    )
                self._ensure_sender()
                self.cond.wait(left)

    def _close_session(self, st: SessionState) -> None:
        with st.write_lock:
            if st.closed:
                return
            st.closed = True
            if not st.journal.closed and st.pid == os.getpid():
                st.journal.fsync()
        with self.cond:
            st.has_session = False
            self.cond.notify_all()

    def finish(self, st: SessionState) -> None:
        """Called by the sender on a closed session with nothing left to send."""
        with st.write_lock, st.io_lock:
            if st.journal.closed:
                return
            with self.cond:
                if not st.closed or st.pending_events > 0 or st.finished:
                    return
                st.finished = True
                self.cond.notify_all()
            if self.config.keep_journal:
                st.journal.close()
            else:
                st.journal.remove()

    # ---- the sender thread -------------------------------------------------

    def _ensure_sender(self) -> None:
        """Starts the sender thread if needed (called with `cond` held; never
        from atexit)."""
        if self.stopping or self.closed:
            return
        if self._thread is None or not self._thread.is_alive():
            try:
                self._thread = start_thread(Sender(self).run, f"agent-chain-sender-{os.getpid()}")
            except RuntimeError as exc:  # at interpreter shutdown: the journal keeps it
                log.warning("agent-chain sender not started (%s); events stay journaled", exc)

    def http(self) -> httpx.Client:
        with self._http_lock:
            if self._http is None:
                self._http = httpx.Client(
                    base_url=self.config.base_url,
                    headers={
                        "Authorization": f"Bearer {self._api_key}",
                        "User-Agent": "agent-chain-python/0.1",
                    },
                    timeout=httpx.Timeout(self.config.request_timeout, connect=10.0),
                    transport=self._transport,
                )
            return self._http

    def _fetch_keys(self) -> dict[str, bytes]:
        resp = self.http().get("/v1/keys")
        resp.raise_for_status()
        try:
            return parse_keys(resp.json())
        except ValueError as exc:
            raise httpx.DecodingError(f"GET /v1/keys: {exc}") from exc

    def report(
        self, st: SessionState | None, error: AgentChainError, *, loud: bool = False
    ) -> None:
        """A failure of the background work: into `status()` and `on_error`."""
        with self.cond:
            self.errors += 1
            self.last_error = error
            if st is not None:
                st.last_error = error
        if not loud:
            log.warning("%s", error)
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                log.exception("on_error raised")

    # ---- flush, status, close ------------------------------------------------

    def flush(self, timeout: float = 30.0) -> FlushReport:
        """Sends everything recorded now (no linger), fsyncs the journals, and
        waits until it is acknowledged, every unacknowledged session is stopped,
        or `timeout` seconds passed. Never waits longer than `timeout`."""
        return self._flush(timeout, start=True)

    def _flush(self, timeout: float, *, start: bool) -> FlushReport:
        deadline = time.monotonic() + timeout
        self._sync_all()
        with self.cond:
            self.flush_waiters += 1
            try:
                if start and self._pid == os.getpid() and self._waiting_sessions():
                    self._ensure_sender()
                self.cond.notify_all()
                while True:
                    if not self._waiting_sessions():
                        break
                    if self._thread is None or not self._thread.is_alive():
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)
            finally:
                self.flush_waiters -= 1
            return self._report_locked()

    # The same bounded wait as `flush`, whose name it keeps; it runs in a thread.
    async def aflush(self, timeout: float = 30.0) -> FlushReport:  # noqa: ASYNC109
        """`flush` for asyncio and trio: the wait runs in a worker thread."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(
            functools.partial(self.flush, timeout), abandon_on_cancel=True
        )

    def _waiting_sessions(self) -> list[SessionState]:
        return [
            st
            for st in self.states.values()
            if st.stopped is None and not st.finished and st.pending_events > 0
        ]

    def _report_locked(self) -> FlushReport:
        pending = sum(max(0, st.pending_events) for st in self.states.values() if not st.finished)
        return FlushReport(
            complete=pending == 0,
            sent=sum(max(0, st.sent_seq - st.base_acked) for st in self.states.values()),
            acknowledged=self.acknowledged,
            pending=pending,
            last_error=self.last_error,
            stopped_sessions=tuple(
                sid for sid, st in self.states.items() if st.stopped is not None
            ),
        )

    def status(self) -> Status:
        with self.cond:
            sessions = tuple(
                SessionStatus(
                    session_id=st.session_id,
                    state=st.state,
                    next_seq=st.published_next_seq,
                    acknowledged_seq=st.acked_seq,
                    pending_events=max(0, st.pending_events),
                    pending_bytes=max(0, st.pending_bytes),
                    last_error=st.last_error,
                    stopped_by=st.stopped,
                )
                for st in self.states.values()
            )
            report = self._report_locked()
            return Status(
                sender_running=self._thread is not None and self._thread.is_alive(),
                sessions=sessions,
                recorded=self.recorded,
                sent=report.sent,
                acknowledged=self.acknowledged,
                pending_events=report.pending,
                pending_bytes=sum(s.pending_bytes for s in sessions if s.state != "finished"),
                errors=self.errors,
                last_error=self.last_error,
            )

    def close(self, timeout: float = 30.0) -> FlushReport:
        """Closes every session, flushes (up to `timeout`), stops the sender and
        releases the journals. What is not acknowledged stays journaled and is
        resumed by the next client."""
        if self.closed:
            with self.cond:
                return self._report_locked()
        for st in list(self.states.values()):
            self._close_session(st)
        report = self._flush(timeout, start=True)
        self._shutdown()
        return report

    def _shutdown(self) -> None:
        with self.cond:
            self.stopping = True
            self.closed = True
            self.cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.config.request_timeout + 5)
        for st in list(self.states.values()):
            if st.finished:
                continue
            with st.write_lock, st.io_lock:
                st.closed = True
                if not st.journal.closed:
                    st.journal.close()
            if st.pending_events <= 0 and not self.config.keep_journal:
                self._remove_finished(st.session_id)
        with self._http_lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def _sync_all(self) -> None:
        if self._pid != os.getpid():
            return
        for st in list(self.states.values()):
            with st.io_lock:
                if not st.journal.closed:
                    st.journal.fsync()

    def _check_usable(self) -> None:
        if self.closed:
            raise SessionClosedError("the client is closed")

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- fork and exit ------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """The child starts clean: no sessions, no thread, no connections; the
        parent's sessions stay the parent's (their `record` raises here)."""
        old = list(self.states.values())
        self._init_runtime()
        for st in old:
            st.journal.abandon()

    def _at_exit(self) -> None:
        """A bounded flush; never starts a thread."""
        if self.closed or self._pid != os.getpid():
            return
        with contextlib.suppress(Exception):
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._flush(self.config.exit_timeout, start=False)
            with self.cond:
                self.stopping = True  # later records stay journaled for the next run
                self.cond.notify_all()
            self._sync_all()


class Session:
    """One agent run: a hash chain of events. Also a context manager that closes it."""

    def __init__(self, client: Client, state: SessionState) -> None:
        self._client = client
        self._state = state

    @property
    def session_id(self) -> str:
        return self._state.session_id

    def record(
        self, kind: str, payload: Mapping[str, Any], *, timeout: float | None = None
    ) -> tuple[int, str]:
        """Validates, masks, hashes and journals the next event; returns its
        ``(seq, hash)``. No network I/O. Raises `InvalidEventError` for anything
        the server would refuse, `JournalFullError` when the journal's cap
        stays reached (for `timeout` seconds, default the client's
        `full_timeout`; 0 never waits), `SessionUnusableError` on a closed,
        stopped or inherited session."""
        return self._client._record(self._state, kind, payload, timeout)

    @property
    def client(self) -> Client:
        """The client this session records through."""
        return self._client

    def receipt(self) -> Receipt | None:
        """The latest verified seal of this session, or None."""
        with self._client.cond:
            return self._state.anchor

    @property
    def next_seq(self) -> int:
        return self._state.published_next_seq

    def close(self) -> None:
        """No more events; what is recorded is still sent in the background."""
        self._client._close_session(self._state)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for c in list(_CLIENTS):
        c._after_fork_in_child()


def _at_exit() -> None:
    for c in list(_CLIENTS):
        c._at_exit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
