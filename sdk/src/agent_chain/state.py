"""What the client knows of one session: the writer's side (next seq, last
hash, journal end) and the sender's side (what is acknowledged, what is in
flight, why it stopped)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from .errors import AgentChainError
from .journal import Journal, ResumePoint
from .receipts import Receipt


@dataclass
class Batch:
    """A batch being sent: the same bytes on every retry."""

    first_seq: int
    last_seq: int
    last_hash: str
    start_offset: int
    end_offset: int
    body: bytes
    """Dropped while waiting to retry (memory stays flat with many sessions
    during an outage) and read again from the journal: the same bytes."""
    attempts: int = 0


class SessionState:
    """Fields under `write_lock` belong to `record`; the others are read and
    written under the client's condition (`Client._cond`). Lock order:
    `write_lock`, then the condition; the sender never takes `write_lock`
    while holding the condition."""

    def __init__(self, session_id: str, journal: Journal, at: ResumePoint) -> None:
        self.session_id = session_id
        self.journal = journal
        self.pid = os.getpid()
        # ---- writer side (write_lock) ----
        self.write_lock = threading.Lock()
        self.io_lock = threading.Lock()
        """Held to fsync or close the journal's descriptors (closing also holds
        `write_lock`), so that the sender's fsync never holds up `record`."""
        self.next_seq = at.next_seq
        self.last_hash = at.last_hash
        self.end = at.end
        self.closed = False
        """No more records: closed by the user, or resumed without a Session."""
        # ---- shared (client condition) ----
        self.published_next_seq = at.next_seq
        self.published_end = at.end
        self.acked_seq = at.acked_seq
        self.acked_offset = at.acked_offset
        self.anchor: Receipt | None = at.anchor
        self.batch: Batch | None = None
        self.not_before = 0.0
        self.pending_since: float | None = None
        """Monotonic time since which events wait (for the linger)."""
        self.probing = at.pending_events > 0
        """After a restart, seals of events the server may already hold could be
        missing locally: send one event at a time until the server appends,
        each duplicate answer bringing the next seal of the chain."""
        self.dirty = False
        self.stopped: AgentChainError | None = None
        self.last_error: AgentChainError | None = None
        self.has_session = False
        """A `Session` object is open on it."""
        self.finished = False
        """Closed, fully acknowledged (or stopped), and its journal closed."""
        self.sent_seq = at.acked_seq
        """Highest seq sent at least once."""
        self.base_acked = at.acked_seq
        """`acked_seq` when this client took the session over."""

    @property
    def pending_events(self) -> int:
        return self.published_next_seq - 1 - self.acked_seq

    @property
    def pending_bytes(self) -> int:
        return self.published_end - self.acked_offset

    @property
    def state(self) -> str:
        if self.stopped is not None:
            return "stopped"
        if self.finished:
            return "finished"
        if self.closed:
            return "closing" if self.pending_events > 0 else "closed"
        return "open"
