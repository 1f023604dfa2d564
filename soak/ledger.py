"""What the writers sent and what they were told, kept for the checker.

Plain data only: the checker compares it with what PostgreSQL holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Batch:
    """One batch of one session: events `first..last`, sent as the same bytes on
    every attempt until a 200 acknowledged it."""

    first: int
    last: int
    attempts: int = 0
    # What each failed attempt got: "conn", "timeout", "503", "429", or another status.
    failures: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # when each was answered
    acked: bool = False
    duplicate: bool = False  # the acknowledging 200 said "duplicate": true
    seal_hash: str = ""  # the hash of the seal that acknowledging 200 carried
    acked_at: float = 0.0


@dataclass
class SessionLog:
    """A session one writer wrote: every event's hash (32 raw bytes each, by seq),
    and its batches in the order they were sent."""

    session_id: str
    writer: int
    digests: bytearray = field(default_factory=bytearray)
    batches: list[Batch] = field(default_factory=list)
    abandoned: str = ""  # why the writer gave up on it (a 409 or a 4xx), if it did

    def event_hash(self, seq: int) -> str:
        return self.digests[32 * seq : 32 * seq + 32].hex()

    @property
    def events_sent(self) -> int:
        return len(self.digests) // 32


@dataclass
class Answer:
    """A request that did not end in 200: when it was sent and answered, what it got."""

    sent_at: float
    answered_at: float
    what: str  # "conn:<exception>", "timeout", or the HTTP status
    code: str = ""  # the problem's `code`, if any
    retry_after: str | None = None
    writer: int = -1


@dataclass
class Ledger:
    sessions: list[SessionLog] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    requests: int = 0
    acks: int = 0
    last_ack_at: float = 0.0
    # Things a writer saw that must never happen (wrong 200 bodies, 409s, 5xx other than 503).
    violations: list[str] = field(default_factory=list)
