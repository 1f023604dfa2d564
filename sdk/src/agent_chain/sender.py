"""The client's one background thread: batches each session's journal, sends,
verifies every seal, and handles every answer of ``POST /v1/ingest``.

One batch in flight per session (the next starts where the last verified seal
ends), sessions served round-robin, a batch resent byte for byte until the
server answers, with exponential backoff and jitter, honouring Retry-After. The
loop never dies: whatever escapes a step is reported and the loop goes on.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from ._telemetry import no_instrumentation
from .errors import (
    AgentChainError,
    AuthError,
    ChainForkError,
    IntegrityError,
    RejectedBatchError,
    SealVerificationError,
    SendError,
    ServerBusyError,
    TransportError,
)
from .receipts import Receipt, SealError
from .records import BadLine, line_hash, parse_event_line
from .state import Batch, SessionState

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("agent_chain")

_BODY_HEAD = b'{"events":['
_BODY_TAIL = b"]}"
BODY_OVERHEAD = len(_BODY_HEAD) + len(_BODY_TAIL)


class Sender:
    """The loop of the background thread of one `Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cfg = client.config
        self._rotation = 0
        self._last_sync = time.monotonic()
        self._random = random.Random()

    # ---- the loop -------------------------------------------------------------

    def run(self) -> None:
        # No OTel instrumentation may trace the SDK's own requests.
        with no_instrumentation():
            self._loop()

    def _loop(self) -> None:
        client = self.client
        while True:
            try:
                ready = self._wait_for_work()
                if ready is None:
                    return
                for st in ready:
                    try:
                        self._serve(st)
                    except Exception as exc:  # one session's trouble is not the others'
                        self._step_failed(st, exc)
                self._sync_journals(force=False)
            except BaseException as exc:  # never die silently
                if not isinstance(exc, Exception):
                    client.report(None, _wrap(exc))
                    raise
                client.report(None, _wrap(exc))
                with client.cond:
                    client.cond.wait(0.5)

    def _wait_for_work(self) -> list[SessionState] | None:
        """The sessions to serve now (fairly rotated), or None when stopping."""
        client = self.client
        cfg = self.cfg
        with client.cond:
            while True:
                if client.stopping:
                    return None
                now = time.monotonic()
                urgent = client.flush_waiters > 0
                states = list(client.states.values())
                if states:
                    self._rotation = (self._rotation + 1) % len(states)
                    states = states[self._rotation :] + states[: self._rotation]
                wake = now + cfg.fsync_interval if client.dirty else now + 60.0
                ready: list[SessionState] = []
                for st in states:
                    if st.finished or st.stopped is not None:
                        continue
                    pending = st.pending_events
                    if pending <= 0 and st.batch is None:
                        if st.closed:
                            ready.append(st)  # finish it: close its journal
                        continue
                    if st.not_before > now:
                        wake = min(wake, st.not_before)
                        continue
                    since = st.pending_since if st.pending_since is not None else now
                    if (
                        urgent
                        or st.closed
                        or st.batch is not None
                        or st.probing
                        or pending >= cfg.max_batch_events
                        or st.pending_bytes >= cfg.max_batch_bytes
                        or now - since >= cfg.linger
                    ):
                        ready.append(st)
                    else:
                        wake = min(wake, since + cfg.linger)
                if ready:
                    return ready
                if client.dirty and now - self._last_sync >= cfg.fsync_interval:
                    client.cond.release()
                    try:
                        self._sync_journals(force=True)
                    finally:
                        client.cond.acquire()
                    continue
                client.cond.wait(max(0.0, wake - now))

    def _sync_journals(self, *, force: bool) -> None:
        """fsync what was written since the last time (the interval policy)."""
        client = self.client
        now = time.monotonic()
        if not force and now - self._last_sync < self.cfg.fsync_interval:
            return
        self._last_sync = now
        with client.cond:
            if not client.dirty:
                return
            client.dirty = False
            dirty = [st for st in client.states.values() if st.dirty and not st.finished]
            for st in dirty:
                st.dirty = False
        for st in dirty:
            with st.io_lock:  # not write_lock: an fsync must not hold up `record`
                if not st.journal.closed:
                    st.journal.fsync()

    # ---- one step of one session ------------------------------------------------

    def _serve(self, st: SessionState) -> None:
        client = self.client
        with client.cond:
            if st.finished or st.stopped is not None:
                return
            batch = st.batch
            start, end = st.acked_offset, st.published_end
            first_seq = st.acked_seq + 1
            probing = st.probing
            drained = st.pending_events <= 0 and batch is None
            closed = st.closed
        if drained:
            if closed:
                client.finish(st)
            return
        if batch is None:
            batch = self._make_batch(st, start, end, first_seq, 1 if probing else None)
            with client.cond:
                st.batch = batch
                st.sent_seq = max(st.sent_seq, batch.last_seq)
        self._send(st, batch)

    def _make_batch(
        self, st: SessionState, start: int, end: int, first_seq: int, limit: int | None
    ) -> Batch:
        cfg = self.cfg
        lines, stop = st.journal.read_lines(
            start, end, limit or cfg.max_batch_events, cfg.max_batch_bytes - BODY_OVERHEAD
        )
        if not lines:
            raise IntegrityError(
                f"session {st.session_id}: the journal holds no event at byte {start}",
                session_id=st.session_id,
            )
        body = _BODY_HEAD + b",".join(lines) + _BODY_TAIL
        return Batch(first_seq, first_seq + len(lines) - 1, line_hash(lines[-1]), start, stop, body)

    def _send(self, st: SessionState, batch: Batch) -> None:
        client = self.client
        if not batch.body:
            size = batch.end_offset - batch.start_offset
            lines = st.journal.pread(batch.start_offset, size).rstrip(b"\n").replace(b"\n", b",")
            batch.body = _BODY_HEAD + lines + _BODY_TAIL
        try:
            resp = client.http().post(
                "/v1/ingest",
                content=batch.body,
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self._retry(
                st,
                batch,
                TransportError(
                    f"session {st.session_id}: no answer from {client.config.base_url} "
                    f"({type(exc).__name__}: {exc}); the batch will be resent",
                    session_id=st.session_id,
                ),
            )
            return
        self._answer(st, batch, resp)

    def _answer(self, st: SessionState, batch: Batch, resp: httpx.Response) -> None:
        status = resp.status_code
        body = _json(resp)
        code = body.get("code") if isinstance(body, dict) else None
        detail = body.get("detail") if isinstance(body, dict) else resp.text[:500]
        sid = st.session_id
        where = f"session {sid}, seq {batch.first_seq}..{batch.last_seq}"
        if status == 200 and isinstance(body, dict):
            self._accept(st, batch, body)
        elif status == 409 and code == "seq_gap" and isinstance(body, dict):
            self._seq_gap(st, batch, body)
        elif status == 409 and code == "chain_fork":
            self._stop(
                st,
                ChainForkError(
                    f"{where}: the server holds another chain for this session ({detail}); "
                    "sending stopped, the journal is kept",
                    session_id=sid,
                    status=status,
                    code=code,
                ),
            )
        elif status in (401, 403):
            self._retry(
                st,
                batch,
                AuthError(
                    f"{where}: {status} {code}: {detail}; events keep being journaled and "
                    "are retried",
                    session_id=sid,
                    status=status,
                    code=code,
                ),
            )
        elif status in (429, 503) or status >= 500:
            self._retry(
                st,
                batch,
                ServerBusyError(
                    f"{where}: {status} {code}: {detail}; retrying",
                    session_id=sid,
                    status=status,
                    code=code,
                ),
                retry_after=_retry_after(resp),
            )
        else:  # 400, 413, 415 and anything else the protocol does not allow
            self._stop(
                st,
                RejectedBatchError(
                    f"{where}: the server refused the batch: {status} {code}: {detail}. "
                    "The session is quarantined: nothing more is sent, the journal is kept",
                    session_id=sid,
                    status=status,
                    code=code,
                ),
            )

    def _accept(self, st: SessionState, batch: Batch, body: dict[str, Any]) -> None:
        """200: the seal is verified, and must extend our chain of seals, before
        any event counts as acknowledged."""
        client = self.client
        sid = st.session_id
        duplicate = body.get("duplicate") is True
        try:
            receipt = client.keyring.verify(body.get("seal"), sid)
        except SealError as exc:
            self._stop(st, _seal_error(sid, f"the seal does not verify: {exc}"))
            return
        except httpx.HTTPError as exc:
            self._retry(
                st,
                batch,
                TransportError(f"session {sid}: cannot fetch GET /v1/keys ({exc})", session_id=sid),
            )
            return
        with client.cond:
            anchor = st.anchor
            base_seq = st.acked_seq
        problem = _link_problem(receipt, batch, anchor, base_seq, duplicate)
        if problem is None and receipt.seq != batch.last_seq:
            # A duplicate covered by a seal beyond this batch: find our event there.
            found = self._event_at(st, batch.end_offset, batch.last_seq + 1, receipt.seq)
            if found is None:
                problem = f"it covers seq {receipt.seq}, beyond every event recorded"
                end_offset, pinned = batch.end_offset, ""
            else:
                end_offset, pinned = found
        else:
            end_offset, pinned = batch.end_offset, batch.last_hash
        if problem is None and receipt.prev_hash != pinned:
            problem = (
                f"its prev_hash {receipt.prev_hash} is not our event's hash {pinned} "
                f"at seq {receipt.seq}"
            )
        if problem is not None:
            self._stop(st, _seal_error(sid, f"the seal at seq {receipt.seq}: {problem}"))
            return
        st.journal.append_seal(receipt, client.keyring.known()[receipt.key_id])
        with client.cond:
            newly = receipt.seq - st.acked_seq
            st.acked_seq = receipt.seq
            st.acked_offset = end_offset
            st.anchor = receipt
            st.batch = None
            st.not_before = 0.0
            if not duplicate:
                st.probing = False
            st.pending_since = time.monotonic() if st.pending_events > 0 else None
            client.acknowledged += newly
            client.pending_bytes = sum(s.pending_bytes for s in client.states.values())
            client.cond.notify_all()

    def _event_at(
        self, st: SessionState, offset: int, seq: int, target: int
    ) -> tuple[int, str] | None:
        """(offset after it, hash) of our event `target`, reading from `offset`
        where event `seq` starts."""
        with self.client.cond:
            end = st.published_end
        for line_offset, line in st.journal.scan_lines(offset):
            if line_offset >= end:
                break
            try:
                ev = parse_event_line(line.rstrip(b"\n"), canonical_check=False)
            except BadLine:
                return None
            if ev.seq != seq:
                return None
            if seq == target:
                return line_offset + len(line), ev.hash
            seq += 1
        return None

    def _seq_gap(self, st: SessionState, batch: Batch, body: dict[str, Any]) -> None:
        next_seq = body.get("next_seq")
        sid = st.session_id
        if not isinstance(next_seq, int):
            self._stop(st, _seal_error(sid, "409 seq_gap without next_seq"))
            return
        with self.client.cond:
            anchor_seq = st.anchor.seq if st.anchor is not None else -1
        if next_seq <= anchor_seq:
            self._stop(
                st,
                IntegrityError(
                    f"session {sid}: the server's chain continues at seq {next_seq}, below "
                    f"seq {anchor_seq} which it sealed for this client: the server lost "
                    "sealed data. Sending stopped; the journal (with the seals) is kept",
                    session_id=sid,
                    status=409,
                    code="seq_gap",
                ),
            )
            return
        # Every batch starts right after the last verified seal, so the server
        # holds unsealed events of ours: not a state the protocol allows.
        self._stop(
            st,
            IntegrityError(
                f"session {sid}: the server's chain continues at seq {next_seq}, above our "
                f"last verified seal (seq {anchor_seq}) yet below the batch sent "
                f"(seq {batch.first_seq}); sending stopped, the journal is kept",
                session_id=sid,
                status=409,
                code="seq_gap",
            ),
        )

    # ---- outcomes ----------------------------------------------------------

    def _step_failed(self, st: SessionState, exc: Exception) -> None:
        """Something unexpected in one session's step (a journal read, a bug):
        an integrity problem stops the session, anything else is retried later."""
        if isinstance(exc, IntegrityError):
            self._stop(st, exc)
            return
        err = _wrap(exc)
        err_session = getattr(err, "session_id", None)
        if isinstance(err, SendError) and err_session is None:
            err.session_id = st.session_id
        with self.client.cond:
            st.not_before = time.monotonic() + self.cfg.backoff_max * self._random.uniform(0.5, 1)
            st.last_error = err
        self.client.report(st, err)

    def _retry(
        self,
        st: SessionState,
        batch: Batch,
        error: SendError,
        retry_after: float | None = None,
    ) -> None:
        cfg = self.cfg
        exp = min(cfg.backoff_max, cfg.backoff_base * (2 ** min(batch.attempts, 30)))
        delay = exp * self._random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = retry_after + self._random.uniform(0.0, min(1.0, retry_after * 0.1))
        batch.attempts += 1
        batch.body = b""
        with self.client.cond:
            st.not_before = time.monotonic() + delay
            st.last_error = error
        self.client.report(st, error)

    def _stop(self, st: SessionState, error: SendError) -> None:
        log.error("%s", error)
        with self.client.cond:
            st.stopped = error
            st.last_error = error
            st.batch = None
            self.client.cond.notify_all()
        self.client.report(st, error, loud=True)


def _link_problem(
    r: Receipt, batch: Batch, anchor: Receipt | None, acked_seq: int, duplicate: bool
) -> str | None:
    """How the seal fails to extend our chain of seals over this batch, or None."""
    if r.seq < batch.last_seq:
        return f"it ends at seq {r.seq}, before the batch's last event (seq {batch.last_seq})"
    if not duplicate and r.seq != batch.last_seq:
        return f"it ends at seq {r.seq}, not at the batch's last event (seq {batch.last_seq})"
    if r.first_seq != acked_seq + 1:
        return f"its first_seq is {r.first_seq}, not {acked_seq + 1} (right after our last seal)"
    want = anchor.hash if anchor is not None else "0" * 64
    if r.prev_seal != want:
        return f"its prev_seal {r.prev_seal} is not our last seal's hash {want}"
    return None


def _seal_error(session_id: str, message: str) -> SealVerificationError:
    return SealVerificationError(
        f"session {session_id}: {message}. Not an acknowledgement: sending stopped, "
        "the journal is kept",
        session_id=session_id,
    )


def _json(resp: httpx.Response) -> Any:
    try:
        return json.loads(resp.content)
    except ValueError:
        return None


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _wrap(exc: BaseException) -> AgentChainError:
    if isinstance(exc, AgentChainError):
        return exc
    err = SendError(f"the sender hit {type(exc).__name__}: {exc}; it goes on")
    err.__cause__ = exc
    return err


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t
